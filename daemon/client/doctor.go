package client

import (
	"context"
	"net/http"

	"github.com/labvm/labvm/daemon/api"
)

// Doctor checks the store against libvirt and the data dir; it changes
// nothing.
func (c *Client) Doctor(ctx context.Context) (api.DoctorReport, error) {
	var out api.DoctorReport
	return out, c.do(ctx, http.MethodGet, "/v1/doctor", nil, &out)
}

// RunDoctor repairs what is safe and/or rebuilds records from manifests.
func (c *Client) RunDoctor(ctx context.Context, req api.DoctorRequest) (api.DoctorReport, error) {
	var out api.DoctorReport
	return out, c.do(ctx, http.MethodPost, "/v1/doctor", req, &out)
}
