package daemon

import (
	"os/user"
	"testing"
)

func TestQEMUAccount(t *testing.T) {
	root, err := user.LookupId("0")
	if err != nil {
		t.Skip("no uid 0 in the user database")
	}
	tests := []struct {
		name     string
		conf     string
		wantName string // "" = none found
	}{
		{name: "user= names an account", conf: "# comment\nuser = \"" + root.Username + "\"\n", wantName: root.Username},
		{name: "user= as +uid", conf: "user = \"+0\"\n", wantName: root.Username},
		{name: "commented out falls back to the defaults", conf: "#user = \"" + root.Username + "\"\n"},
		{name: "an unknown user is none", conf: "user = \"no-such-user-labvm\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acct, ok, err := qemuAccount([]byte(tt.conf))
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantName == "" {
				// The defaults may or may not exist on this host; when one
				// does, it must be one of them.
				if ok && acct.Name != "libvirt-qemu" && acct.Name != "qemu" {
					t.Errorf("got %q, want a default or none", acct.Name)
				}
				return
			}
			if !ok || acct.Name != tt.wantName || acct.UID != 0 {
				t.Errorf("got %+v ok=%v, want %s uid 0", acct, ok, tt.wantName)
			}
		})
	}
}

func TestLocalSystemURI(t *testing.T) {
	for uri, want := range map[string]bool{
		"qemu:///system":               true,
		"qemu:///system?socket=/run/x": true,
		"qemu:///session":              false,
		"qemu+ssh://host/system":       false,
		"test:///default":              false,
	} {
		if got := localSystemURI(uri); got != want {
			t.Errorf("localSystemURI(%q) = %v, want %v", uri, got, want)
		}
	}
}
