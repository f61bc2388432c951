package errdefs_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
)

// TestRecordedRoundTrips: an operation's recorded failure, rebuilt with
// Recorded, goes back on the wire exactly as it was recorded.
func TestRecordedRoundTrips(t *testing.T) {
	if errdefs.Recorded(nil) != nil {
		t.Fatal("Recorded(nil) is not nil")
	}
	for _, code := range []api.Code{
		api.CodeInvalidArgument, api.CodeNotFound, api.CodeAlreadyExists, api.CodeConflict,
		api.CodeQuotaExceeded, api.CodePermissionDenied, api.CodeUnavailable,
		api.CodeInsufficientResources, api.CodeTooLarge, api.CodeTooManyRequests,
		api.CodeCancelled, api.CodeInternal,
	} {
		rec := &store.OperationError{Code: string(code), Message: "it went wrong: " + string(code), Hint: "do something"}
		got := errdefs.ToAPI(errdefs.Recorded(rec))
		want := api.Error{Code: code, Message: rec.Message, Hint: rec.Hint}
		if *got != want {
			t.Errorf("%s: ToAPI(Recorded) = %+v, want %+v", code, *got, want)
		}
	}
}

// TestOneWayToMakeAnAPIError: outside the wire package, the client and this
// one, wire errors come from ToAPI, never built by hand, so every failure
// gets its code from the one table. The server's three low-level writers
// (no route, a handler's panic, no peer credentials) are the exceptions.
func TestOneWayToMakeAnAPIError(t *testing.T) {
	allowed := map[string]int{"httpapi/server.go": 3}
	root := ".." // daemon/
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch rel {
			case "api", "client", "errdefs":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n := strings.Count(string(b), "api.Error{") + strings.Count(string(b), "api.Errorf(")
		if n > allowed[filepath.ToSlash(rel)] {
			t.Errorf("daemon/%s builds %d wire errors by hand (allowed %d): return errdefs.New or errdefs.Invalidf and let ToAPI make the wire error",
				rel, n, allowed[filepath.ToSlash(rel)])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
