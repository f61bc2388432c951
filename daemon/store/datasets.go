package store

import (
	"fmt"
	"slices"
	"sort"
	"time"
)

// Dataset is a host directory an owner declared, shared read-only with
// the instances created with it.
type Dataset struct {
	Name      string    `json:"name"`
	Path      string    `json:"path"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}

// CreateDataset stores a new dataset; its name must be free.
func (t *Tx) CreateDataset(d Dataset) error {
	if t.tx.Bucket(bucketDatasets).Get([]byte(d.Name)) != nil {
		return fmt.Errorf("dataset %q: %w", d.Name, ErrExists)
	}
	return put(t, bucketDatasets, []byte(d.Name), d)
}

// Dataset returns the dataset with the given name.
func (t *Tx) Dataset(name string) (Dataset, error) {
	return get[Dataset](t, bucketDatasets, []byte(name))
}

// Datasets lists every dataset by name.
func (t *Tx) Datasets() ([]Dataset, error) {
	out, err := list[Dataset](t, bucketDatasets)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// DeleteDataset removes a dataset record.
func (t *Tx) DeleteDataset(name string) error {
	b := t.tx.Bucket(bucketDatasets)
	if b.Get([]byte(name)) == nil {
		return ErrNotFound
	}
	return b.Delete([]byte(name))
}

// DatasetUsers names the instances, in any state, created with the
// dataset, sorted.
func (t *Tx) DatasetUsers(name string) ([]string, error) {
	insts, err := t.Instances()
	if err != nil {
		return nil, err
	}
	var users []string
	for _, inst := range insts {
		if slices.Contains(inst.Datasets, name) {
			users = append(users, inst.Name)
		}
	}
	sort.Strings(users)
	return users, nil
}
