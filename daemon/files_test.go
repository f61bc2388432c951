package daemon_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/daemontest"
	"github.com/labvm/labvm/daemon/store"
)

// TestCopyRefusals checks what a copy is refused for before any byte
// moves: the fake hypervisor runs nothing in a guest, so every case here
// must be decided by the daemon alone, and each is in the audit log.
func TestCopyRefusals(t *testing.T) {
	td := daemontest.New(t, daemontest.NewFakeHypervisor(), nil)
	ctx := t.Context()
	for _, name := range []string{"keyless-dev", "stopped-dev"} {
		if _, err := td.Create(t, daemontest.TinyReq(name)); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	inst, err := td.Client.Instance(ctx, "keyless-dev")
	if err != nil || inst.GuestUser == "" {
		t.Fatalf("an instance made without a key has no guest user to copy as: %+v, %v", inst, err)
	}
	op, err := td.Client.Stop(ctx, "stopped-dev")
	if err == nil {
		_, err = td.Client.Wait(ctx, op.ID, nil)
	}
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	in := func(name string, req api.CopyInRequest) func() error {
		return func() error {
			_, err := td.Client.CopyIn(ctx, name, req, bytes.NewReader([]byte("data")), 4)
			return err
		}
	}
	out := func(name string, req api.CopyOutRequest) func() error {
		return func() error {
			s, err := td.Client.CopyOut(ctx, name, req)
			if err == nil {
				_ = s.Close()
			}
			return err
		}
	}
	tests := []struct {
		name string
		call func() error
		code api.Code
		want string
	}{
		{"no such instance", in("nope-dev", api.CopyInRequest{Path: "/tmp/x", Kind: api.CopyFile}), api.CodeNotFound, `instance "nope-dev" not found`},
		{"stopped, in", in("stopped-dev", api.CopyInRequest{Path: "/tmp/x", Kind: api.CopyFile}), api.CodeConflict, "start it first"},
		{"stopped, out", out("stopped-dev", api.CopyOutRequest{Path: "/tmp/x"}), api.CodeConflict, "start it first"},
		{"another user's home", in("keyless-dev", api.CopyInRequest{Path: "~root/x", Kind: api.CopyFile}), api.CodeInvalidArgument, "~USER is not supported"},
		{"out of the home", out("keyless-dev", api.CopyOutRequest{Path: "../etc/shadow"}), api.CodeInvalidArgument, "leaves the home"},
		{"a name with a slash", in("keyless-dev", api.CopyInRequest{Path: "~/", Kind: api.CopyFile, Name: "../x"}), api.CodeInvalidArgument, "without /"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !api.IsCode(err, tt.code) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %s mentioning %q", err, tt.code, tt.want)
			}
		})
	}

	t.Run("every attempt is audited with its direction and path", func(t *testing.T) {
		var entries []store.AuditEntry
		if err := td.Store().View(func(tx *store.Tx) error {
			var err error
			entries, err = tx.Audit(store.AuditFilter{Limit: 100})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		var ins, outs int
		for _, e := range entries {
			switch {
			case strings.HasSuffix(e.Action, ":cp-in") && e.Outcome == "failed" && strings.HasPrefix(e.Message, "in ") && !strings.HasPrefix(e.Message, "in ,"):
				ins++
			case strings.HasSuffix(e.Action, ":cp-out") && e.Outcome == "failed" && strings.HasPrefix(e.Message, "out "):
				outs++
			}
		}
		if ins != 3 || outs != 2 {
			t.Fatalf("audited %d copies in and %d out, want 3 and 2 (the unknown instance is refused before):\n%+v", ins, outs, entries)
		}
	})
}
