package images

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheckDestination(t *testing.T) {
	host := netip.MustParseAddr("192.0.2.10")
	local := func() []netip.Addr { return []netip.Addr{host} }
	tests := []struct {
		addr       string
		allowLocal bool
		want       string // "" means allowed
	}{
		{addr: "93.184.216.34"},
		{addr: "2606:2800:220:1:248:1893:25c8:1946"},
		{addr: "10.0.0.5"}, // a lab mirror on the LAN is fine
		{addr: "127.0.0.1", want: "loopback"},
		{addr: "127.8.9.10", want: "loopback"},
		{addr: "::1", want: "loopback"},
		{addr: "::ffff:127.0.0.1", want: "loopback"},
		{addr: "127.0.0.1", allowLocal: true},
		{addr: "169.254.169.254", want: "link-local"},
		{addr: "169.254.169.254", allowLocal: true, want: "link-local"},
		{addr: "fe80::1", want: "link-local"},
		{addr: "0.0.0.0", want: "unspecified"},
		{addr: "0.1.2.3", want: "unspecified"},
		{addr: "::", want: "unspecified"},
		{addr: "224.0.0.1", want: "multicast"},
		{addr: "ff02::1", want: "multicast"},
		{addr: "255.255.255.255", want: "broadcast"},
		{addr: "192.0.2.10", want: "address of this host"},
		{addr: "192.0.2.10", allowLocal: true},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			err := checkDestination(netip.MustParseAddr(tt.addr), tt.allowLocal, local)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrForbiddenAddress) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrForbiddenAddress mentioning %q", err, tt.want)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://cloud.example/img.qcow2", "https://cloud.example/img.qcow2"},
		{"https://alice:s3cret@cloud.example/img.qcow2", "https://redacted@cloud.example/img.qcow2"},
		{"https://ghp_TOKEN@cloud.example/img.qcow2", "https://redacted@cloud.example/img.qcow2"},
		{"https://bucket.example/img.qcow2?X-Amz-Signature=abc&X-Amz-Credential=def", "https://bucket.example/img.qcow2?redacted"},
		{"https://cloud.example/img.qcow2#token=abc", "https://cloud.example/img.qcow2"},
		{"mailto:secret@example.com", "mailto:redacted"},
		{"http://[::1:bad", "(unparsable URL)"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := RedactURL(tt.in); got != tt.want {
				t.Fatalf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestPullRefusesTheHost: with the default Puller, a pull reaches no
// service of the host, whether the URL names it, a DNS name resolves to it
// or a redirect leads there; the error says why, nothing is stored, and
// the URL's token is not in the error.
func TestPullRefusesTheHost(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("secret admin page"))
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	// A lab-side mirror the test may reach (AllowLoopback) that redirects
	// to places the daemon must not go.
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/?token=abc", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		}
	}))
	defer redirector.Close()

	tests := []struct {
		name          string
		url           string
		allowLoopback bool
		wantIs        error
		wantMsg       string
	}{
		{name: "loopback literal", url: srv.URL + "/img.qcow2?token=s3cret", wantIs: ErrForbiddenAddress, wantMsg: "loopback"},
		{name: "a name resolving to loopback", url: "http://localhost:" + port + "/img.qcow2", wantIs: ErrForbiddenAddress, wantMsg: "loopback"},
		{name: "IPv6 loopback", url: "http://[::1]:" + port + "/img.qcow2", wantIs: ErrForbiddenAddress, wantMsg: "loopback"},
		{name: "unspecified", url: "http://0.0.0.0:" + port + "/img.qcow2", wantIs: ErrForbiddenAddress, wantMsg: "unspecified"},
		{name: "redirect to metadata", url: redirector.URL + "/to-metadata", allowLoopback: true, wantIs: ErrForbiddenAddress, wantMsg: "link-local"},
		{name: "endless redirects", url: redirector.URL + "/loop", allowLoopback: true, wantIs: ErrRemoteRefused, wantMsg: "redirects"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cat := New(t.TempDir())
			cat.Puller = Puller{Attempts: 3, RetryWait: time.Millisecond, StallTimeout: 5 * time.Second, AllowLoopback: tt.allowLoopback}
			start := time.Now()
			_, err := cat.Pull(context.Background(), PullOptions{URL: tt.url})
			t.Log(err)
			if !errors.Is(err, tt.wantIs) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Pull error = %v, want %v mentioning %q", err, tt.wantIs, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "token=abc") {
				t.Fatalf("error shows a token: %v", err)
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("refusal took %v: it must not be retried", time.Since(start))
			}
			if names := bases(t, cat); len(names) != 0 {
				t.Fatalf("catalogue holds %v", names)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the host's service was reached %d times", n)
	}
}
