package api

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestImportQuery(t *testing.T) {
	tests := []struct {
		name    string
		req     ImportImageRequest
		raw     string // parsed instead of req.Query() when set
		wantErr string
	}{
		{name: "name only", req: ImportImageRequest{Name: "tiny"}},
		{name: "everything", req: ImportImageRequest{Name: "ds", SHA256: strings.Repeat("a", 64),
			Apps: []App{{Name: "jupyter", Port: 8888, Path: "/tree"}, {Name: "web", Port: 80, Path: "/"}}}},
		{name: "unknown parameter", raw: "name=x&path=/etc/shadow", wantErr: `unknown query parameter "path"`},
		{name: "name twice", raw: "name=a&name=b", wantErr: "given 2 times"},
		{name: "bad app", raw: "name=a&app=jupyter", wantErr: "NAME=PORT"},
		{name: "bad port", raw: "name=a&app=j=99999/x", wantErr: "not 1-65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := tt.req.Query()
			if tt.raw != "" {
				var err error
				if q, err = url.ParseQuery(tt.raw); err != nil {
					t.Fatal(err)
				}
			}
			got, err := ParseImportQuery(q)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.req) {
				t.Fatalf("round trip = %+v, want %+v", got, tt.req)
			}
		})
	}
}
