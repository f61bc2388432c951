package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

func TestImagePullArguments(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	tests := []cliCase{
		{[]string{"image", "pull", "debian"}, 2, "pull takes NAME and URL"},
		{[]string{"image", "pull", "debian", "http://x/d.qcow2", "--sha256", "ab", "--checksums", "http://x/SHA256SUMS"}, 2, "not both"},
		{[]string{"image", "pull", "debian", "http://x/d.qcow2"}, 1, "labvmd is not running"},
	}
	runWithoutDaemon(t, sock, tests)
}

// TestProgressRedrawsDetail checks that a stage whose detail changes (a
// download's bar) is redrawn on a terminal, and printed once in logs.
func TestProgressRedrawsDetail(t *testing.T) {
	started := time.Now()
	at := func(detail string) api.Operation {
		return api.Operation{Stages: []api.Stage{{Name: "Downloading", Detail: detail, StartedAt: started}}}
	}
	tests := []struct {
		name     string
		live     bool
		want     []string
		wantNone string
	}{
		{name: "terminal", live: true, want: []string{"(1.0 MiB / 4.0 MiB (25%))", "(2.0 MiB / 4.0 MiB (50%))"}},
		{name: "log", live: false, want: []string{"  … Downloading (1.0 MiB / 4.0 MiB (25%))\n"}, wantNone: "50%"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			p := newProgress(&buf, tc.live)
			p.update(at("1.0 MiB / 4.0 MiB (25%)"))
			p.update(at("2.0 MiB / 4.0 MiB (50%)"))
			p.stop()
			for _, w := range tc.want {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("output %q lacks %q", buf.String(), w)
				}
			}
			if tc.wantNone != "" && strings.Contains(buf.String(), tc.wantNone) {
				t.Errorf("output %q has %q", buf.String(), tc.wantNone)
			}
		})
	}
}
