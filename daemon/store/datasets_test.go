package store

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/labvm/labvm/vm"
)

func TestDatasets(t *testing.T) {
	s, _ := openTemp(t)
	now := time.Now().UTC()
	for _, d := range []Dataset{
		{Name: "imagenet", Path: "/srv/datasets/imagenet", CreatedBy: "root", CreatedAt: now},
		{Name: "coco", Path: "/srv/datasets/coco", CreatedBy: "root", CreatedAt: now},
	} {
		if err := s.Update(func(tx *Tx) error { return tx.CreateDataset(d) }); err != nil {
			t.Fatal(err)
		}
	}
	dup := Dataset{Name: "coco", Path: "/elsewhere"}
	if err := s.Update(func(tx *Tx) error { return tx.CreateDataset(dup) }); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v, want ErrExists", err)
	}
	insts := []vm.Instance{
		{ID: "0000000000000001", Name: "bob-dev", Datasets: []string{"imagenet", "coco"}, State: vm.StateStopped},
		{ID: "0000000000000002", Name: "alice-dev", Datasets: []string{"imagenet"}, State: vm.StateRunning},
		{ID: "0000000000000003", Name: "carol-dev", State: vm.StateRunning},
	}
	for _, inst := range insts {
		if err := s.Update(func(tx *Tx) error { return tx.CreateInstance(inst) }); err != nil {
			t.Fatal(err)
		}
	}
	err := s.View(func(tx *Tx) error {
		list, err := tx.Datasets()
		if err != nil {
			return err
		}
		if len(list) != 2 || list[0].Name != "coco" || list[1].Name != "imagenet" || list[1].Path != "/srv/datasets/imagenet" {
			t.Errorf("Datasets() = %+v", list)
		}
		for _, tc := range []struct {
			name string
			want []string
		}{
			{"imagenet", []string{"alice-dev", "bob-dev"}},
			{"coco", []string{"bob-dev"}},
			{"unused", nil},
		} {
			got, err := tx.DatasetUsers(tc.name)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("DatasetUsers(%s) = %v, %v; want %v", tc.name, got, err, tc.want)
			}
		}
		if _, err := tx.Dataset("nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Dataset(nope): %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *Tx) error { return tx.DeleteDataset("coco") }); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *Tx) error { return tx.DeleteDataset("coco") }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}
