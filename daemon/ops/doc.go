// Package ops owns operations: the asynchronous work every mutating call
// returns at once. It claims one operation per instance, records each
// step as it begins and ends (written before the step acts, so the stored
// operation is the intent as of a crash), fans changes out to waiters and
// the event stream, bounds the stored history, and runs each operation's
// goroutine under an owner that waits for it.
//
// Steps are named by constants of type Step owned by the engines that run
// them; their titles are what people read and may change freely. The
// test-only crash points key on the constants.
//
// It knows nothing of HTTP, libvirt or what an operation does.
package ops
