package lifecycle

import "github.com/labvm/labvm/daemon/ops"

// The steps instance operations report, in the order they run. IDs are
// what crash points (LABVM_CRASH_AT=create/boot) and tests name; titles
// are for people and may change.
var (
	StepDisk      = ops.Step{ID: "disk", Title: "Creating disk"}
	StepSeed      = ops.Step{ID: "seed", Title: "Writing cloud-init seed"}
	StepBoot      = ops.Step{ID: "boot", Title: "Starting domain"}
	StepWait      = ops.Step{ID: "wait-guest", Title: "Waiting for the guest"}
	StepCloudInit = ops.Step{ID: "cloud-init", Title: "Waiting for cloud-init to finish"}
	StepSetup     = ops.Step{ID: "setup-script", Title: "Running the setup script"}
	StepStartup   = ops.Step{ID: "startup-script", Title: "Running the startup script"}
	StepShutdown  = ops.Step{ID: "shutdown", Title: "Shutting down the guest"}
	StepDealloc   = ops.Step{ID: "deallocate", Title: "Deallocating"}
	StepDestroy   = ops.Step{ID: "destroy", Title: "Destroying domain"}
	StepRemove    = ops.Step{ID: "remove-files", Title: "Removing disk and seed"}
	StepRelease   = ops.Step{ID: "release-address", Title: "Releasing address"}
	StepCancelled = ops.Step{ID: "cancel", Title: "Cancelling"}
)
