package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/labvm/labvm/vm"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Jobs live in one nested bucket per instance, under "jobs":
//
//	jobs/<instance id>/j/<id, 8 bytes big-endian>  vm.Job
//	jobs/<instance id>/o/<id, 8 bytes big-endian>  JobOutput, once it ended
//	jobs/<instance id>/limit                       parallel limit, when set
//
// Big-endian ids keep the cursor order the queue's FIFO order, and the
// bucket's sequence hands out the small per-instance ids. Deleting the
// instance's bucket drops all of it at once.
var (
	jobPrefix    = []byte("j/")
	outputPrefix = []byte("o/")
	keyJobLimit  = []byte("limit")
)

// JobOutput is what is kept of a finished job's streams: the last
// vm.MaxJobOutput bytes of each.
type JobOutput struct {
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
}

func jobKey(prefix []byte, id int) []byte {
	k := make([]byte, len(prefix)+8)
	copy(k, prefix)
	binary.BigEndian.PutUint64(k[len(prefix):], uint64(id))
	return k
}

// instanceJobs returns the instance's bucket; create makes it if missing,
// otherwise a missing bucket is nil.
func (t *Tx) instanceJobs(instanceID string, create bool) (*bolt.Bucket, error) {
	root := t.tx.Bucket(bucketJobs)
	if !create {
		return root.Bucket([]byte(instanceID)), nil
	}
	return root.CreateBucketIfNotExists([]byte(instanceID))
}

// CreateJob queues a new job and returns it with its id, the next of the
// instance's sequence (1, 2, 3…; never reused).
func (t *Tx) CreateJob(j vm.Job) (vm.Job, error) {
	b, err := t.instanceJobs(j.InstanceID, true)
	if err != nil {
		return j, err
	}
	seq, err := b.NextSequence()
	if err != nil {
		return j, err
	}
	j.ID = int(seq)
	return j, putJob(b, j)
}

func putJob(b *bolt.Bucket, j vm.Job) error {
	raw, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode job %d: %w", j.ID, err)
	}
	return b.Put(jobKey(jobPrefix, j.ID), raw)
}

// Job returns one job of an instance.
func (t *Tx) Job(instanceID string, id int) (vm.Job, error) {
	var j vm.Job
	b, _ := t.instanceJobs(instanceID, false)
	if b == nil {
		return j, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	raw := b.Get(jobKey(jobPrefix, id))
	if raw == nil {
		return j, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		return j, fmt.Errorf("decode job %d: %w", id, err)
	}
	return j, nil
}

// PutJob updates an existing job.
func (t *Tx) PutJob(j vm.Job) error {
	b, _ := t.instanceJobs(j.InstanceID, false)
	if b == nil || b.Get(jobKey(jobPrefix, j.ID)) == nil {
		return fmt.Errorf("job %d: %w", j.ID, ErrNotFound)
	}
	return putJob(b, j)
}

// Jobs lists an instance's jobs, oldest first.
func (t *Tx) Jobs(instanceID string) ([]vm.Job, error) {
	b, _ := t.instanceJobs(instanceID, false)
	if b == nil {
		return nil, nil
	}
	var out []vm.Job
	c := b.Cursor()
	for k, raw := c.Seek(jobPrefix); k != nil && bytes.HasPrefix(k, jobPrefix); k, raw = c.Next() {
		var j vm.Job
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("decode job %x of %s: %w", k, instanceID, err)
		}
		out = append(out, j)
	}
	return out, nil
}

// JobInstances lists the ids of instances that have or had jobs.
func (t *Tx) JobInstances() ([]string, error) {
	var ids []string
	err := t.tx.Bucket(bucketJobs).ForEachBucket(func(k []byte) error {
		ids = append(ids, string(k))
		return nil
	})
	return ids, err
}

// PutJobOutput keeps what is left of a finished job's output.
func (t *Tx) PutJobOutput(instanceID string, id int, out JobOutput) error {
	b, err := t.instanceJobs(instanceID, true)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("encode output of job %d: %w", id, err)
	}
	return b.Put(jobKey(outputPrefix, id), raw)
}

// JobOutput returns a finished job's kept output; none kept is empty.
func (t *Tx) JobOutput(instanceID string, id int) (JobOutput, error) {
	var out JobOutput
	b, _ := t.instanceJobs(instanceID, false)
	if b == nil {
		return out, nil
	}
	raw := b.Get(jobKey(outputPrefix, id))
	if raw == nil {
		return out, nil
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return out, fmt.Errorf("decode output of job %d: %w", id, err)
	}
	return out, nil
}

// PruneJobs drops the oldest finished jobs and their output beyond keep,
// so an instance's history stays bounded. Queued and running jobs stay.
func (t *Tx) PruneJobs(instanceID string, keep int) error {
	jobs, err := t.Jobs(instanceID)
	if err != nil {
		return err
	}
	finished := 0
	for _, j := range jobs {
		if j.State.Terminal() {
			finished++
		}
	}
	b, _ := t.instanceJobs(instanceID, false)
	for _, j := range jobs {
		if finished <= keep {
			break
		}
		if !j.State.Terminal() {
			continue
		}
		if err := b.Delete(jobKey(jobPrefix, j.ID)); err != nil {
			return err
		}
		if err := b.Delete(jobKey(outputPrefix, j.ID)); err != nil {
			return err
		}
		finished--
	}
	return nil
}

// JobLimit returns the instance's parallel limit; 0 means none was set.
func (t *Tx) JobLimit(instanceID string) (int, error) {
	b, _ := t.instanceJobs(instanceID, false)
	if b == nil {
		return 0, nil
	}
	raw := b.Get(keyJobLimit)
	if raw == nil {
		return 0, nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, fmt.Errorf("decode job limit of %s: %w", instanceID, err)
	}
	return n, nil
}

// SetJobLimit sets the instance's parallel limit; 0 goes back to the
// default.
func (t *Tx) SetJobLimit(instanceID string, n int) error {
	b, err := t.instanceJobs(instanceID, true)
	if err != nil {
		return err
	}
	if n == 0 {
		return b.Delete(keyJobLimit)
	}
	raw, _ := json.Marshal(n)
	return b.Put(keyJobLimit, raw)
}

// DeleteJobs drops every job of an instance, with their output and
// limit. Deleting an instance without jobs is not an error.
func (t *Tx) DeleteJobs(instanceID string) error {
	err := t.tx.Bucket(bucketJobs).DeleteBucket([]byte(instanceID))
	if errors.Is(err, bolterrors.ErrBucketNotFound) {
		return nil
	}
	return err
}
