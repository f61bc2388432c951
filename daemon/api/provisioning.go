package api

// ProvisioningStatus is how far cloud-init got on an instance's latest
// boot.
type ProvisioningStatus string

const (
	// ProvisioningRunning: cloud-init has not finished this boot yet.
	ProvisioningRunning ProvisioningStatus = "running"
	// ProvisioningDone: cloud-init finished this boot without errors.
	ProvisioningDone ProvisioningStatus = "done"
	// ProvisioningFailed: cloud-init finished this boot with errors.
	ProvisioningFailed ProvisioningStatus = "failed"
)

// Provisioning is cloud-init's outcome on an instance's latest boot. An
// instance whose image has no cloud-init has none: it is ready when its
// guest agent first answers.
type Provisioning struct {
	Status ProvisioningStatus `json:"status"`
	// Errors are what cloud-init reported (result.json), at most a few,
	// clipped, control characters escaped: the guest wrote them.
	Errors []string `json:"errors,omitempty"`
}
