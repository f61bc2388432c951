package vm

import "fmt"

// ProvisioningStatus is how far cloud-init got on an instance's latest
// boot. Only images with cloud-init have one (see Instance.Provisioning).
type ProvisioningStatus int

const (
	// ProvisioningRunning: cloud-init has not finished this boot yet.
	ProvisioningRunning ProvisioningStatus = iota + 1
	// ProvisioningDone: cloud-init finished this boot without errors.
	ProvisioningDone
	// ProvisioningFailed: cloud-init finished this boot with errors.
	ProvisioningFailed
)

var provisioningNames = map[ProvisioningStatus]string{
	ProvisioningRunning: "running",
	ProvisioningDone:    "done",
	ProvisioningFailed:  "failed",
}

func (s ProvisioningStatus) String() string {
	if n, ok := provisioningNames[s]; ok {
		return n
	}
	return fmt.Sprintf("ProvisioningStatus(%d)", int(s))
}

// MarshalText writes the status by name, so records stay readable and
// stable if the constants are ever reordered.
func (s ProvisioningStatus) MarshalText() ([]byte, error) {
	if n, ok := provisioningNames[s]; ok {
		return []byte(n), nil
	}
	return nil, fmt.Errorf("unknown provisioning status %d", int(s))
}

// UnmarshalText reads a status written by MarshalText.
func (s *ProvisioningStatus) UnmarshalText(b []byte) error {
	for k, n := range provisioningNames {
		if n == string(b) {
			*s = k
			return nil
		}
	}
	return fmt.Errorf("unknown provisioning status %q", b)
}

// Provisioning is cloud-init's outcome on the instance's latest boot.
type Provisioning struct {
	Status ProvisioningStatus `json:"status"`
	// Errors are cloud-init's own (result.json), bounded and with control
	// characters escaped: the guest wrote them.
	Errors []string `json:"errors,omitempty"`
}
