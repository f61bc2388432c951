package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
)

// FuzzDecodeCreateRequest feeds arbitrary bodies to the daemon's strict
// decoder, as the create handler does. It must never panic, must answer
// every refusal with a typed API error (never a 500), and whatever it
// accepts must survive a round trip unchanged.
func FuzzDecodeCreateRequest(f *testing.F) {
	for _, s := range []string{
		`{"name":"alice-dev","size":"Standard_B1s","image":"tiny"}`,
		`{"name":"a","size":"b","image":"c","disk_size":"120G","ssh_public_key":"ssh-ed25519 AAAA x","vnet":"v","subnet":"s","assign_to":"bob"}`,
		`{"name":"a"} {"name":"b"}`,
		`{"name":"a","extra":1}`,
		`{"name":1}`,
		`[]`, `null`, ``, `{`, "{\"name\":\"\u0000\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/v1/instances", bytes.NewReader(body))
		r.Body = http.MaxBytesReader(rec, r.Body, maxBodyBytes)
		var req api.CreateInstanceRequest
		err := decode(r, &req)
		if err != nil {
			if code := errdefs.Code(err); code != api.CodeInvalidArgument && code != api.CodeTooLarge {
				t.Fatalf("decode(%q) = %v, want InvalidArgument or RequestTooLarge", body, err)
			}
			return
		}
		raw, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", req, err)
		}
		var again api.CreateInstanceRequest
		r2 := httptest.NewRequest(http.MethodPost, "/v1/instances", bytes.NewReader(raw))
		if err := decode(r2, &again); err != nil {
			t.Fatalf("decode of our own encoding %s: %v", raw, err)
		}
		if !reflect.DeepEqual(req, again) {
			t.Fatalf("round trip changed the request: %+v → %+v", req, again)
		}
	})
}
