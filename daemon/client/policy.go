package client

import (
	"context"
	"net/http"
	"strconv"

	"github.com/labvm/labvm/daemon/api"
)

// SetIdleShutdown sets ("30m", "2h", "1d") or clears ("off") an
// instance's idle shutdown and returns the instance.
func (c *Client) SetIdleShutdown(ctx context.Context, name, value string) (api.Instance, error) {
	var out api.Instance
	return out, c.do(ctx, http.MethodPut, "/v1/instances/"+esc(name)+"/idle-shutdown", api.SetIdleShutdownRequest{IdleShutdown: value}, &out)
}

// AddSchedule adds a start/stop schedule to an instance.
func (c *Client) AddSchedule(ctx context.Context, name string, req api.CreateScheduleRequest) (api.Schedule, error) {
	var out api.Schedule
	return out, c.do(ctx, http.MethodPost, "/v1/instances/"+esc(name)+"/schedules", req, &out)
}

// Schedules lists an instance's schedules, or with name "" every
// schedule the caller may see.
func (c *Client) Schedules(ctx context.Context, name string) ([]api.Schedule, error) {
	var out []api.Schedule
	path := "/v1/schedules"
	if name != "" {
		path = "/v1/instances/" + esc(name) + "/schedules"
	}
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// RemoveSchedule deletes one of an instance's schedules.
func (c *Client) RemoveSchedule(ctx context.Context, name string, id int) error {
	return c.do(ctx, http.MethodDelete, "/v1/instances/"+esc(name)+"/schedules/"+strconv.Itoa(id), nil, nil)
}
