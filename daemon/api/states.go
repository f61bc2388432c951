package api

// InstanceState is an instance's state as the API spells it. Every state of
// the daemon's model has a constant here (a test in daemon/httpapi checks
// it), so clients compare against these rather than string literals.
type InstanceState string

// The instance states; see docs/ARCHITECTURE.md "Instance states".
const (
	StateUnknown      InstanceState = "Unknown"
	StateCreating     InstanceState = "Creating"
	StateSettingUp    InstanceState = "SettingUp"
	StateRunning      InstanceState = "Running"
	StateStopping     InstanceState = "Stopping"
	StateStopped      InstanceState = "Stopped"
	StateStarting     InstanceState = "Starting"
	StateRestarting   InstanceState = "Restarting"
	StateDeleting     InstanceState = "Deleting"
	StateCreateFailed InstanceState = "CreateFailed"
	StateSetupFailed  InstanceState = "SetupFailed"
)

// InstanceStates lists every instance state, in the model's order.
var InstanceStates = []InstanceState{
	StateUnknown, StateCreating, StateSettingUp, StateRunning, StateStopping, StateStopped,
	StateStarting, StateRestarting, StateDeleting, StateCreateFailed, StateSetupFailed,
}

// JobState is a job's state as the API spells it.
type JobState string

// The job states.
const (
	JobQueued    JobState = "Queued"
	JobStarting  JobState = "Starting"
	JobRunning   JobState = "Running"
	JobSucceeded JobState = "Succeeded"
	JobFailed    JobState = "Failed"
	JobCancelled JobState = "Cancelled"
	JobLost      JobState = "Lost"
)

// JobStates lists every job state, in the model's order.
var JobStates = []JobState{JobQueued, JobStarting, JobRunning, JobSucceeded, JobFailed, JobCancelled, JobLost}

// JobEnded reports whether a job in state s is over.
func JobEnded(s JobState) bool {
	switch s {
	case JobSucceeded, JobFailed, JobCancelled, JobLost:
		return true
	}
	return false
}
