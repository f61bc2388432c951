package studio

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// hostKind is what a request's Host names.
type hostKind int

const (
	hostForeign hostKind = iota // anything else: refused
	hostStudio                  // 127.0.0.1, ::1, localhost: the page
	hostApp                     // APP.INSTANCE.localhost: an application
)

type hostInfo struct {
	kind          hostKind
	instance, app string
}

// classifyHost reads a Host header. Any port is accepted (the page may
// be reached through `ssh -L 9000:127.0.0.1:PORT`); the name must be a
// loopback one: browsers resolve localhost and every *.localhost to the
// loopback address themselves (RFC 6761), so no other site can own them.
func classifyHost(host string) hostInfo {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	name = strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")
	if ip := net.ParseIP(name); ip != nil {
		if ip.IsLoopback() {
			return hostInfo{kind: hostStudio}
		}
		return hostInfo{}
	}
	if name == "localhost" {
		return hostInfo{kind: hostStudio}
	}
	rest, ok := strings.CutSuffix(name, ".localhost")
	if !ok {
		return hostInfo{}
	}
	// Instance names have no dots; application names may.
	i := strings.LastIndexByte(rest, '.')
	if i <= 0 || i == len(rest)-1 {
		return hostInfo{}
	}
	return hostInfo{kind: hostApp, app: rest[:i], instance: rest[i+1:]}
}

// appHost is the host name of an instance's application on the gateway.
func appHost(instance, app string) string { return app + "." + instance + ".localhost" }

// tokenHeader carries the page's token on every change it asks for.
const tokenHeader = "X-Studio-Token"

// refuseCrossSite says why a request that changes something must not be
// served, or "" when it may be. A browser visiting another site runs as
// the same user as the page and may send requests here, so a change
// needs (1) the token, which only a page of this origin can read, and
// (2) when the browser names its origin (all do on POST), this origin.
func (s *Server) refuseCrossSite(r *http.Request) string {
	if origin := r.Header.Get("Origin"); origin != "" {
		u, err := url.Parse(origin)
		if err != nil || u.Scheme != "http" || !strings.EqualFold(u.Host, r.Host) {
			return "the request came from another site (" + origin + ")"
		}
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return "the request came from another site (Sec-Fetch-Site: " + site + ")"
	}
	got := r.Header.Get(tokenHeader)
	if got == "" {
		got = r.PostFormValue("token")
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) != 1 {
		return "the request does not carry this page's token; reload the page"
	}
	return ""
}
