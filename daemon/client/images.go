package client

import (
	"context"
	"net/http"

	"github.com/labvm/labvm/daemon/api"
)

// PullImage starts downloading an image from an HTTP(S) URL into the
// catalogue; follow the returned operation with Wait for its progress.
func (c *Client) PullImage(ctx context.Context, req api.PullImageRequest) (api.Operation, error) {
	var out api.Operation
	return out, c.do(ctx, http.MethodPost, "/v1/images/pull", req, &out)
}
