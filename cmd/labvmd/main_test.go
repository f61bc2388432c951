package main

import (
	"strings"
	"testing"

	"github.com/labvm/labvm/daemon"
	"github.com/labvm/labvm/daemon/client"
	"github.com/labvm/labvm/systemd"
)

// TestSocketPathsAgree: the socket systemd listens on, the one labvmd
// binds by default and the one labvm dials are the same path. Only cmd/
// sees all three packages, so the check lives here.
func TestSocketPathsAgree(t *testing.T) {
	unit := string(systemd.Units()["labvmd.socket"])
	if !strings.Contains(unit, "\nListenStream="+client.DefaultSocket+"\n") {
		t.Errorf("labvmd.socket does not listen on the client's default %s:\n%s", client.DefaultSocket, unit)
	}
	if got := daemon.DefaultConfig().SocketPath; got != client.DefaultSocket {
		t.Errorf("labvmd binds %s by default, labvm dials %s", got, client.DefaultSocket)
	}
}
