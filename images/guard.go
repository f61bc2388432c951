package images

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// ErrForbiddenAddress means a pull would connect to the host itself or to
// an address no image server has: loopback, link-local (where cloud
// metadata services live), unspecified, multicast or broadcast, or one of
// the host's own addresses. labvmd runs as root next to services that
// trust local callers; a pull must not be a way to reach them.
var ErrForbiddenAddress = errors.New("destination not allowed")

// maxRedirects bounds the redirects one request follows.
const maxRedirects = 5

// thisNetwork is 0.0.0.0/8: connecting to 0.0.0.0 reaches the host itself.
var thisNetwork = netip.MustParsePrefix("0.0.0.0/8")

// destinationGuard returns a net.Dialer Control function that refuses
// forbidden destinations. It runs on the address actually dialled, after
// name resolution and for every redirect, so neither a DNS name that
// resolves to 127.0.0.1 nor a redirect to 169.254.169.254 gets through.
// allowLocal lets loopback and the host's own addresses through (tests
// that serve images from httptest).
func destinationGuard(allowLocal bool) func(network, address string, _ syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: cannot tell what %q is", ErrForbiddenAddress, address)
		}
		return checkDestination(ap.Addr(), allowLocal, localAddrs)
	}
}

// localAddrs lists the addresses of this host's interfaces.
func localAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

func checkDestination(a netip.Addr, allowLocal bool, local func() []netip.Addr) error {
	a = a.Unmap()
	why := ""
	switch {
	case a.IsUnspecified() || a.Is4() && thisNetwork.Contains(a):
		why = "the unspecified address (this host)"
	case a.IsLoopback():
		if !allowLocal {
			why = "a loopback address (this host)"
		}
	case a.IsLinkLocalUnicast():
		why = "a link-local address (where metadata services answer)"
	case a.IsMulticast():
		why = "a multicast address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		why = "the broadcast address"
	case !allowLocal:
		for _, l := range local() {
			if l == a {
				why = "an address of this host"
				break
			}
		}
	}
	if why != "" {
		return fmt.Errorf("%w: %s is %s; labvmd pulls images only from servers elsewhere", ErrForbiddenAddress, a, why)
	}
	return nil
}

// newGuardedClient is the HTTP client pulls use. There is no overall
// timeout (images are gigabytes); a stalled transfer is caught by the
// Puller's StallTimeout instead. Compression is off so that byte offsets,
// and with them resumes, refer to the file itself and not to a gzip stream
// the transport would silently decode. No proxy is taken from the
// environment: the guard must see the real destination.
func newGuardedClient(allowLocal bool) *http.Client {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: destinationGuard(allowLocal)}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.DialContext = d.DialContext
	t.DisableCompression = true
	t.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{Transport: t, CheckRedirect: checkRedirect}
}

// checkRedirect follows at most maxRedirects http(s) redirects.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return fmt.Errorf("%w: more than %d redirects", ErrRemoteRefused, maxRedirects)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return fmt.Errorf("%w: redirected to a %s URL", ErrRemoteRefused, req.URL.Scheme)
	}
	return nil
}

// RedactURL returns raw fit for anyone to read: operations, logs and
// errors are seen by every reader of the daemon. User information (a
// password, or a token used as the user name) and the query string
// (where signed URLs keep their tokens) become "redacted"; the fragment
// goes. What does not parse as a URL is not shown at all.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.User != nil {
		u.User = url.User("redacted")
	}
	if u.Opaque != "" {
		u.Opaque = "redacted"
	}
	if u.RawQuery != "" || u.ForceQuery {
		u.RawQuery, u.ForceQuery = "redacted", false
	}
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}

// redactErr hides the URL inside an error from the HTTP client, which
// names the request's URL with its query string.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = RedactURL(ue.URL)
	}
	return err
}
