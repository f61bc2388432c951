package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/labvm/labvm/daemon/api"
)

func jobsPath(name string) string { return "/v1/instances/" + esc(name) + "/jobs" }

func jobPath(name string, id int) string { return jobsPath(name) + "/" + strconv.Itoa(id) }

// SubmitJob queues a command to run in the instance's guest.
func (c *Client) SubmitJob(ctx context.Context, name string, command []string) (api.Job, error) {
	var out api.Job
	return out, c.do(ctx, http.MethodPost, jobsPath(name), api.SubmitJobRequest{Command: command}, &out)
}

// Jobs lists the instance's jobs, oldest first.
func (c *Client) Jobs(ctx context.Context, name string) (api.JobList, error) {
	var out api.JobList
	return out, c.do(ctx, http.MethodGet, jobsPath(name), nil, &out)
}

// Job shows one job.
func (c *Client) Job(ctx context.Context, name string, id int) (api.Job, error) {
	var out api.Job
	return out, c.do(ctx, http.MethodGet, jobPath(name, id), nil, &out)
}

// CancelJob cancels a queued or running job and returns it as it ended.
func (c *Client) CancelJob(ctx context.Context, name string, id int) (api.Job, error) {
	var out api.Job
	return out, c.do(ctx, http.MethodPost, jobPath(name, id)+"/cancel", nil, &out)
}

// SetJobParallel sets how many jobs the instance runs at once (0: its
// vCPU count).
func (c *Client) SetJobParallel(ctx context.Context, name string, n int) (api.JobList, error) {
	var out api.JobList
	return out, c.do(ctx, http.MethodPut, jobsPath(name)+"/parallel", api.SetJobParallelRequest{Parallel: n}, &out)
}

// JobLogs returns the last MiB of each of the job's streams.
func (c *Client) JobLogs(ctx context.Context, name string, id int) (api.JobLogs, error) {
	var out api.JobLogs
	return out, c.do(ctx, http.MethodGet, jobPath(name, id)+"/logs", nil, &out)
}

// FollowJobLogs streams the job's output to fn until the job ends, and
// returns the ended job.
func (c *Client) FollowJobLogs(ctx context.Context, name string, id int, fn func(api.JobLogEvent) error) (api.Job, error) {
	resp, err := c.request(ctx, http.MethodGet, jobPath(name, id)+"/logs?follow=1", nil)
	if err != nil {
		return api.Job{}, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	// A chunk is up to 1 MiB of output, base64 in JSON.
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev api.JobLogEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return api.Job{}, fmt.Errorf("decode job log event: %w", err)
		}
		if err := fn(ev); err != nil {
			return api.Job{}, err
		}
		if ev.Job != nil {
			return *ev.Job, nil
		}
	}
	if ctx.Err() != nil {
		return api.Job{}, ctx.Err()
	}
	hint := fmt.Sprintf("`labvm job logs %s %d --follow` follows it again", name, id)
	if err := sc.Err(); err != nil {
		return api.Job{}, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("lost labvmd while following job %d: %v", id, err), Hint: hint}
	}
	return api.Job{}, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("labvmd closed the log stream of job %d before it ended", id), Hint: hint}
}
