package client

import (
	"context"
	"net/http"

	"github.com/labvm/labvm/daemon/api"
)

// Networks lists the VNets.
func (c *Client) Networks(ctx context.Context) ([]api.VNet, error) {
	var out []api.VNet
	return out, c.do(ctx, http.MethodGet, "/v1/networks", nil, &out)
}

// Network shows a VNet with its subnets and the addresses in use.
func (c *Client) Network(ctx context.Context, name string) (api.VNet, error) {
	var out api.VNet
	return out, c.do(ctx, http.MethodGet, "/v1/networks/"+esc(name), nil, &out)
}

// CreateNetwork creates a VNet.
func (c *Client) CreateNetwork(ctx context.Context, req api.CreateVNetRequest) (api.VNet, error) {
	var out api.VNet
	return out, c.do(ctx, http.MethodPost, "/v1/networks", req, &out)
}

// DeleteNetwork deletes a VNet no instance uses.
func (c *Client) DeleteNetwork(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/networks/"+esc(name), nil, nil)
}

// AddSubnet adds a subnet to a VNet.
func (c *Client) AddSubnet(ctx context.Context, vnet string, req api.CreateSubnetRequest) (api.VNet, error) {
	var out api.VNet
	return out, c.do(ctx, http.MethodPost, "/v1/networks/"+esc(vnet)+"/subnets", req, &out)
}

// RemoveSubnet removes a subnet no instance uses.
func (c *Client) RemoveSubnet(ctx context.Context, vnet, subnet string) error {
	return c.do(ctx, http.MethodDelete, "/v1/networks/"+esc(vnet)+"/subnets/"+esc(subnet), nil, nil)
}
