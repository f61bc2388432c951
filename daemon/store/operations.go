package store

import (
	"sort"
	"time"
)

// Operation is the stored record of an operation. Its JSON matches the
// wire type's field names, so records written before the two were told
// apart still decode.
type Operation struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Target string `json:"target"`
	// InstanceID is the instance the operation held (empty for image
	// operations, and for operations recorded before it was kept): the
	// name alone may have meant an earlier instance.
	InstanceID string          `json:"instance_id,omitempty"`
	Caller     string          `json:"caller"`
	CallerUID  *int            `json:"caller_uid,omitempty"`
	Status     string          `json:"status"`
	Stages     []Stage         `json:"stages"`
	Error      *OperationError `json:"error,omitempty"`
	CreatedAt  time.Time       `json:"created_at"`
	DoneAt     *time.Time      `json:"done_at,omitempty"`
}

// Stage is one step of an operation. Step is the step's stable name
// (crash points and tests key on it); Name is what people read.
type Stage struct {
	Step      string     `json:"step,omitempty"`
	Name      string     `json:"name"`
	Detail    string     `json:"detail,omitempty"`
	StartedAt time.Time  `json:"started_at"`
	DoneAt    *time.Time `json:"done_at,omitempty"`
}

// OperationError is how an operation failed.
type OperationError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

// Operation returns an operation.
func (t *Tx) Operation(id string) (Operation, error) {
	return get[Operation](t, bucketOperations, []byte(id))
}

// PutOperation stores an operation.
func (t *Tx) PutOperation(op Operation) error {
	return put(t, bucketOperations, []byte(op.ID), op)
}

// Operations lists operations, oldest first.
func (t *Tx) Operations() ([]Operation, error) {
	out, err := list[Operation](t, bucketOperations)
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, err
}

// PruneOperations deletes finished operations done before cutoff and,
// beyond that, all but the newest keep finished ones, so the history
// stays bounded in time and in count. Running operations are kept.
func (t *Tx) PruneOperations(cutoff time.Time, keep int) (int, error) {
	ops, err := t.Operations()
	if err != nil {
		return 0, err
	}
	var finished []Operation
	for _, op := range ops {
		if op.DoneAt != nil {
			finished = append(finished, op)
		}
	}
	pruned := 0
	for i, op := range finished {
		if op.DoneAt.Before(cutoff) || len(finished)-i > keep {
			if err := t.tx.Bucket(bucketOperations).Delete([]byte(op.ID)); err != nil {
				return pruned, err
			}
			pruned++
		}
	}
	return pruned, nil
}
