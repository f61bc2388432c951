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
