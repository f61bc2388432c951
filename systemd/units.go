package systemd

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"path"
)

// unitFiles holds units/*. go:embed needs a package-level variable; it is
// read-only, and Units hands out copies so no caller can alter another's.
//
//go:embed units/labvmd.service units/labvmd.socket units/labvm-guests.service
var unitFiles embed.FS

// Units returns the unit files to install in /etc/systemd/system (or
// /usr/local/lib/systemd/system), keyed by file name, e.g.
// "labvmd.service". ExecStart= expects labvmd at /usr/local/sbin/labvmd,
// where `make install` puts it.
func Units() map[string][]byte {
	entries, err := fs.ReadDir(unitFiles, "units")
	if err != nil {
		// The compiler checked the embed patterns; reading them back
		// cannot fail, so this is a broken build, not a runtime condition.
		panic(fmt.Sprintf("systemd: read embedded units: %v", err))
	}
	out := make(map[string][]byte, len(entries))
	for _, e := range entries {
		b, err := fs.ReadFile(unitFiles, "units/"+e.Name())
		if err != nil {
			panic(fmt.Sprintf("systemd: read embedded unit %s: %v", e.Name(), err))
		}
		out[e.Name()] = b
	}
	return out
}

// DefaultPrefix is where `make install` puts the binaries, and what the
// embedded units name.
const DefaultPrefix = "/usr/local"

// UnitsFor returns the units for binaries installed under prefix
// (labvmd in prefix/sbin, labvm in prefix/bin): "/usr" for the Debian
// package, DefaultPrefix for `make install`.
func UnitsFor(prefix string) map[string][]byte {
	units := Units()
	prefix = path.Clean(prefix)
	if prefix == DefaultPrefix {
		return units
	}
	for name, body := range units {
		body = bytes.ReplaceAll(body, []byte("ExecStart="+DefaultPrefix+"/sbin/labvmd"), []byte("ExecStart="+prefix+"/sbin/labvmd"))
		body = bytes.ReplaceAll(body, []byte("ExecStop="+DefaultPrefix+"/bin/labvm "), []byte("ExecStop="+prefix+"/bin/labvm "))
		units[name] = body
	}
	return units
}
