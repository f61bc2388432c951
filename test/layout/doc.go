// Package layout holds the import rules of labvm as a test, one table
// (rules in layout_test.go) read with `go list -deps -json`:
//
//   - the domain packages (vm, network, storage, images, guest and their
//     sub-packages) never import daemon/..., not even in their tests;
//   - daemon/api, the wire types, imports nothing of labvm;
//   - cmd/labvm builds with CGO_ENABLED=0: no package it depends on needs
//     cgo, so the CLI is a static binary that runs on any host.
//
// A rule that does not hold yet but should is kept in the table with
// knownFailure set: the test logs what breaks it, and fails once it holds
// so the entry is turned into a plain rule.
package layout
