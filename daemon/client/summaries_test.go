package client

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

var summarySeeds = []string{
	`[]`,
	` [ ] `,
	`null`,
	`[{}]`,
	`[{"id":"ffe6eb2b2734926b","name":"lvbench-s0935","state":"Running","size":"Standard_B1s","image":"tiny","ip":"10.213.3.177","owner":"root","jobs_running":2,"jobs_queued":0,"created_at":"2026-11-29T18:58:23.37100971Z"}` + "\n" +
		`,{"id":"b","name":"b","state":"Stopped","size":"Standard_B1s","image":"tiny","ip":"","owner":"root","jobs_running":0,"jobs_queued":-1,"created_at":"2026-11-29T19:58:23+01:00"}]` + "\n",
	`[{"name":"a\"b"}]`,
	`[{"name":"zoë"}]`,
	`[{"name":"\u00e9"}]`,
	`[{"NAME":"upper"}]`,
	`[{"name":null}]`,
	`[{"jobs_running":1.5}]`,
	`[{"jobs_running":1e3}]`,
	`[{"jobs_running":01}]`,
	`[{"jobs_running":99999999999999999999}]`,
	`[{"jobs_running":"2"}]`,
	`[{"created_at":"yesterday"}]`,
	`[{"created_at":"2026-11-29T18:58:23Z","extra":{"nested":[1,2]}}]`,
	`[{"name":"a"},]`,
	`[{"name":"a"}`,
	`[{"name":"a"}] x`,
	`[{"name":"a","name":"b"}]`,
	"[{\"name\":\"tab\there\"}]",
}

// TestDecodeSummaries: the fast path decodes the daemon's own output and
// every seed as encoding/json does, error for error.
func TestDecodeSummaries(t *testing.T) {
	for _, raw := range summarySeeds {
		checkSummaries(t, []byte(raw))
	}
	// The fast path must actually take the daemon's output.
	out, err := scanSummaries([]byte(summarySeeds[4]))
	if err != nil || len(out) != 2 || out[0].JobsRunning != 2 || out[1].CreatedAt.Equal(time.Time{}) {
		t.Fatalf("fast path on the daemon's output: %+v, %v", out, err)
	}
}

// FuzzDecodeSummaries holds decodeSummaries to encoding/json on any input.
func FuzzDecodeSummaries(f *testing.F) {
	for _, s := range summarySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { checkSummaries(t, raw) })
}

func checkSummaries(t *testing.T, raw []byte) {
	t.Helper()
	var want []api.InstanceSummary
	wantErr := json.Unmarshal(raw, &want)
	got, err := decodeSummaries(raw)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%q: error %v, encoding/json says %v", raw, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %+v\nwant %+v", raw, got, want)
	}
}
