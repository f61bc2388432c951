package guest

import (
	"fmt"
	"net/netip"
)

// InstanceEnvPath is the file the seed writes at the first boot naming the
// instance's user and address (LABVM_USER=…, LABVM_ADDRESS=…), one
// assignment a line, readable by systemd's EnvironmentFile= and by sh. An
// image that starts applications for its user (the data-science image's
// labvm-apps.service) reads it; other images ignore it.
const InstanceEnvPath = "/etc/labvm/instance.env"

// InstanceEnv renders InstanceEnvPath's content. user must already be a
// validated Unix name; addr is left out when invalid (a DHCP guest).
func InstanceEnv(user string, addr netip.Addr) []byte {
	s := "# written by labvm at the instance's first boot\n"
	s += fmt.Sprintf("LABVM_USER=%s\n", user)
	if addr.IsValid() {
		s += fmt.Sprintf("LABVM_ADDRESS=%s\n", addr)
	}
	return []byte(s)
}
