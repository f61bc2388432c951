// Package jobs owns the job queue: commands a user submits to run in
// their instance, queued FIFO in the store, started through the guest
// agent up to a per-instance parallel limit, followed by one goroutine
// each, cancelled with SIGTERM then SIGKILL, re-attached by pid after a
// labvmd restart, and their output kept (the last MiB of each stream).
//
// It knows nothing of HTTP or of who may call it (application access is
// checked by the API before any of this runs).
package jobs
