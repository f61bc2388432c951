package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/jobs"
	"github.com/labvm/labvm/vm"
)

func parseJobID(c call) (int, error) {
	v := c.r.PathValue("id")
	id, err := strconv.Atoi(v)
	if err != nil || id <= 0 {
		return 0, errdefs.Invalidf("job id %q: want the number `labvm job list NAME` shows", v)
	}
	return id, nil
}

func (s *Server) job(c call) (vm.Job, error) {
	id, err := parseJobID(c)
	if err != nil {
		return vm.Job{}, err
	}
	return s.Jobs.Get(c.inst, id)
}

func (s *Server) submitJob(c call) (response, error) {
	var req api.SubmitJobRequest
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	j, err := s.Jobs.Submit(c.inst, c.c.Name, req.Command)
	if err != nil {
		return response{}, err
	}
	return ok(jobs.Wire(c.inst, j)), nil
}

func (s *Server) listJobs(c call) (response, error) {
	list, err := s.Jobs.List(c.inst)
	return ok(list), err
}

func (s *Server) getJob(c call) (response, error) {
	j, err := s.job(c)
	return ok(jobs.Wire(c.inst, j)), err
}

func (s *Server) setJobParallel(c call) (response, error) {
	var req api.SetJobParallelRequest
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	list, err := s.Jobs.SetParallel(c.inst, req.Parallel)
	return ok(list), err
}

func (s *Server) cancelJob(c call) (response, error) {
	id, err := parseJobID(c)
	if err != nil {
		return response{}, err
	}
	j, err := s.Jobs.Cancel(c.ctx(), c.inst, id, "cancelled by "+c.c.Name)
	return ok(jobs.Wire(c.inst, j)), err
}

// jobLogs serves a job's output: the last MiB of each stream as one JSON
// object, or with ?follow=1 an NDJSON stream of api.JobLogEvent from that
// point until the job ends. Reading output is application access and is
// audited like exec.
func (s *Server) jobLogs(w http.ResponseWriter, c call) error {
	job, err := s.job(c)
	s.auditNow(c, err)
	if err != nil {
		return err
	}
	if c.r.URL.Query().Has("follow") {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		enc := json.NewEncoder(w)
		flusher, _ := w.(http.Flusher)
		s.Jobs.Follow(c.ctx(), c.inst, job, func(ev api.JobLogEvent) bool {
			if err := enc.Encode(ev); err != nil {
				return false // client gone
			}
			if flusher != nil {
				flusher.Flush()
			}
			return true
		})
		return nil
	}
	logs, err := s.Jobs.Snapshot(c.ctx(), c.inst, job)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, logs)
	return nil
}
