package store

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/labvm/labvm/vm"
)

func TestJobsStore(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "labvm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	now := time.Now().UTC()
	var ids []int
	for i := 0; i < 3; i++ {
		for _, inst := range []string{"aaaa", "bbbb"} {
			err := s.Update(func(tx *Tx) error {
				j, err := tx.CreateJob(vm.Job{InstanceID: inst, Command: []string{"true"}, SubmittedAt: now})
				if inst == "aaaa" {
					ids = append(ids, j.ID)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(ids) != 3 || ids[0] != 1 || ids[1] != 2 || ids[2] != 3 {
		t.Fatalf("ids = %v, want 1 2 3 per instance", ids)
	}
	err = s.Update(func(tx *Tx) error {
		j, err := tx.Job("aaaa", 2)
		if err != nil {
			return err
		}
		j.State = vm.JobSucceeded
		if err := tx.PutJob(j); err != nil {
			return err
		}
		if err := tx.PutJobOutput("aaaa", 2, JobOutput{Stdout: []byte("hi")}); err != nil {
			return err
		}
		if err := tx.PutJob(vm.Job{InstanceID: "aaaa", ID: 9}); !errors.Is(err, ErrNotFound) {
			t.Errorf("PutJob of a missing job: %v", err)
		}
		return tx.SetJobLimit("aaaa", 5)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.View(func(tx *Tx) error {
		jobs, _ := tx.Jobs("aaaa")
		if len(jobs) != 3 || jobs[1].State != vm.JobSucceeded || jobs[0].ID != 1 {
			t.Errorf("jobs = %+v", jobs)
		}
		out, _ := tx.JobOutput("aaaa", 2)
		if string(out.Stdout) != "hi" {
			t.Errorf("output = %+v", out)
		}
		if n, _ := tx.JobLimit("aaaa"); n != 5 {
			t.Errorf("limit = %d", n)
		}
		if _, err := tx.Job("aaaa", 7); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing job: %v", err)
		}
		if _, err := tx.Job("cccc", 1); !errors.Is(err, ErrNotFound) {
			t.Errorf("job of an instance without jobs: %v", err)
		}
		insts, _ := tx.JobInstances()
		if len(insts) != 2 {
			t.Errorf("job instances = %v", insts)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	err = s.Update(func(tx *Tx) error {
		if err := tx.PruneJobs("aaaa", 0); err != nil {
			return err
		}
		jobs, _ := tx.Jobs("aaaa")
		if len(jobs) != 2 {
			t.Errorf("after prune: %+v", jobs)
		}
		if err := tx.DeleteJobs("aaaa"); err != nil {
			return err
		}
		return tx.DeleteJobs("never")
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.View(func(tx *Tx) error {
		if jobs, _ := tx.Jobs("aaaa"); len(jobs) != 0 {
			t.Errorf("jobs after delete: %+v", jobs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
