package client

import (
	"context"
	"net/http"

	"github.com/labvm/labvm/daemon/api"
)

// Datasets lists the datasets and the instances created with each.
func (c *Client) Datasets(ctx context.Context) ([]api.Dataset, error) {
	var out []api.Dataset
	return out, c.do(ctx, http.MethodGet, "/v1/datasets", nil, &out)
}

// AddDataset declares a host directory as a dataset (owners).
func (c *Client) AddDataset(ctx context.Context, req api.AddDatasetRequest) (api.Dataset, error) {
	var out api.Dataset
	return out, c.do(ctx, http.MethodPost, "/v1/datasets", req, &out)
}

// RemoveDataset forgets a dataset no instance was created with (owners).
func (c *Client) RemoveDataset(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/datasets/"+esc(name), nil, nil)
}
