package httpapi

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

// TestAppendSummaryIsEncodingJSON: the summary view's encoder writes the
// very bytes encoding/json writes, plain names and hostile ones alike.
func TestAppendSummaryIsEncodingJSON(t *testing.T) {
	created := time.Date(2026, 11, 29, 18, 58, 23, 371009710, time.UTC)
	for _, tt := range []struct {
		name string
		v    api.InstanceSummary
	}{
		{"plain", api.InstanceSummary{ID: "ffe6eb2b2734926b", Name: "lvbench-s0935", State: api.StateRunning, Size: "Standard_B1s",
			Image: "tiny", IP: "10.213.3.177", Owner: "root", JobsRunning: 2, JobsQueued: 11, CreatedAt: created}},
		{"zero", api.InstanceSummary{}},
		{"other zone, whole seconds", api.InstanceSummary{Name: "x", CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", -5*3600))}},
		{"quotes and backslashes", api.InstanceSummary{Name: `a"b\c`, Owner: `"`, CreatedAt: created}},
		{"control characters", api.InstanceSummary{Name: "a\nb\x1b[2Jc\t\x00", Image: "\x7f", CreatedAt: created}},
		{"HTML", api.InstanceSummary{Name: "<script>&</script>", CreatedAt: created}},
		{"non-ASCII", api.InstanceSummary{Owner: "zoë", Image: "日本", Name: "\u2028\u2029", CreatedAt: created}},
		{"invalid UTF-8", api.InstanceSummary{Owner: "a\xffb\xc3", CreatedAt: created}},
		{"negative counts", api.InstanceSummary{JobsRunning: -1, JobsQueued: -20}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if got := appendSummary(nil, tt.v); !bytes.Equal(got, want) {
				t.Errorf("appendSummary:\n got %s\nwant %s", got, want)
			}
		})
	}
}

// FuzzAppendSummary holds the encoder to encoding/json's bytes for any
// strings.
func FuzzAppendSummary(f *testing.F) {
	f.Add("dev", "Running", "tiny", "bob", int64(1764442703))
	f.Add("a\"\\\n<>&\u2028", "\xff", "日本", "", int64(-1))
	f.Fuzz(func(t *testing.T, name, state, image, owner string, unix int64) {
		v := api.InstanceSummary{ID: name + "id", Name: name, State: api.InstanceState(state), Size: state, Image: image,
			IP: image, Owner: owner, JobsRunning: int(unix % 7), JobsQueued: int(unix % 3), CreatedAt: time.Unix(unix%(1<<35), unix%1e9).UTC()}
		want, err := json.Marshal(v)
		if err != nil {
			t.Skip("encoding/json refuses it (a year beyond 9999)")
		}
		if got := appendSummary(nil, v); !bytes.Equal(got, want) {
			t.Fatalf("appendSummary:\n got %s\nwant %s", got, want)
		}
	})
}
