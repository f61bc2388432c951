package api

import "time"

// OperationStatus is where an operation is.
type OperationStatus string

const (
	OperationRunning   OperationStatus = "running"
	OperationSucceeded OperationStatus = "succeeded"
	OperationFailed    OperationStatus = "failed"
	// OperationCancelled: superseded (a stop or delete cancelled a start
	// or create still waiting for its guest).
	OperationCancelled OperationStatus = "cancelled"
)

// Done reports whether the operation has finished either way.
func (s OperationStatus) Done() bool {
	return s == OperationSucceeded || s == OperationFailed || s == OperationCancelled
}

// OperationKind names what an operation does.
type OperationKind string

const (
	OpCreate      OperationKind = "create"
	OpStart       OperationKind = "start"
	OpStop        OperationKind = "stop"
	OpRestart     OperationKind = "restart"
	OpDelete      OperationKind = "delete"
	OpImageImport OperationKind = "image-import"
	OpImagePull   OperationKind = "image-pull"
)

// Operation is a piece of asynchronous work. Every mutating call returns
// one at once (202 Accepted); clients wait on it.
type Operation struct {
	ID        string          `json:"id"`
	Kind      OperationKind   `json:"kind"`
	Target    string          `json:"target"`
	Caller    string          `json:"caller"`
	Status    OperationStatus `json:"status"`
	Stages    []Stage         `json:"stages"`
	Error     *Error          `json:"error,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	DoneAt    *time.Time      `json:"done_at,omitempty"`
}

// Stage is one step of an operation, shown as progress.
type Stage struct {
	// Step is the step's stable name; Name is for people.
	Step      string     `json:"step,omitempty"`
	Name      string     `json:"name"`
	Detail    string     `json:"detail,omitempty"`
	StartedAt time.Time  `json:"started_at"`
	DoneAt    *time.Time `json:"done_at,omitempty"`
}

// EventInstance marks an instance line of GET /v1/events?instances=1
// (Event field); operation lines carry no such field.
const EventInstance = "instance"

// InstanceEvent is an instance record changing state, as the event
// stream reports it when asked (?instances=1): with or without an
// operation (a guest that powered itself off, reconcile finding its
// domain gone). State is empty and Gone true once the record is deleted;
// Previous is empty for a record just created.
type InstanceEvent struct {
	Event       string        `json:"event"`
	ID          string        `json:"id"`
	Name        string        `json:"name"`
	State       InstanceState `json:"state,omitempty"`
	Previous    InstanceState `json:"previous,omitempty"`
	StateReason string        `json:"state_reason,omitempty"`
	Gone        bool          `json:"gone,omitempty"`
	At          time.Time     `json:"at"`
}

// Event is one line of the event stream: an operation's change or an
// instance's (exactly one is set).
type Event struct {
	Operation *Operation
	Instance  *InstanceEvent
}
