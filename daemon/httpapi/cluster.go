package httpapi

import (
	"context"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/vm"
)

// ClusterView is the cluster as the API reads it (daemon/cluster's
// member, handed over by the daemon's wiring; nil when this host is in
// no cluster).
type ClusterView interface {
	Membership() api.ClusterMembership
	Hosts(ctx context.Context) ([]api.ClusterHost, error)
	Instances(ctx context.Context) ([]api.ClusterInstance, error)
	Quota(ctx context.Context) (api.Quota, error)
	// Place chooses the host for a create of size from image.
	Place(ctx context.Context, image string, size vm.Size) (api.Placement, error)
	// SetQuota takes the size families this host knows, to refuse others.
	SetQuota(ctx context.Context, req api.SetQuotaRequest, families []string) (api.Quota, error)
}

func (s *Server) noCluster() error {
	return errdefs.New(errdefs.ErrNotFound, "add a `cluster:` section (name, etcd endpoints, certificates) to /etc/labvm/labvmd.yaml on each host; see docs/ARCHITECTURE.md, \"Clusters\"",
		"this labvmd (%s) is not part of a cluster", s.Info.Host)
}

func (s *Server) listClusterHosts(c call) (response, error) {
	if s.Cluster == nil {
		return response{}, s.noCluster()
	}
	out, err := s.Cluster.Hosts(c.r.Context())
	return ok(out), err
}

func (s *Server) listClusterInstances(c call) (response, error) {
	if s.Cluster == nil {
		return response{}, s.noCluster()
	}
	out, err := s.Cluster.Instances(c.r.Context())
	return ok(out), err
}

func (s *Server) getClusterQuota(c call) (response, error) {
	if s.Cluster == nil {
		return response{}, s.noCluster()
	}
	out, err := s.Cluster.Quota(c.r.Context())
	return ok(out), err
}

func (s *Server) setClusterQuota(c call) (response, error) {
	if s.Cluster == nil {
		return response{}, s.noCluster()
	}
	var req api.SetQuotaRequest
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	var families []string
	for _, sz := range s.Lifecycle.Sizes().List() {
		families = append(families, sz.Family)
	}
	out, err := s.Cluster.SetQuota(c.r.Context(), req, families)
	return ok(out), err
}

func (s *Server) placeInCluster(c call) (response, error) {
	if s.Cluster == nil {
		return response{}, s.noCluster()
	}
	q := c.r.URL.Query()
	if q.Get("size") == "" || q.Get("image") == "" {
		return response{}, errdefs.Invalidf("placement needs size and image")
	}
	size, err := s.Lifecycle.Sizes().Lookup(q.Get("size"))
	if err != nil {
		return response{}, err
	}
	out, err := s.Cluster.Place(c.r.Context(), q.Get("image"), size)
	return ok(out), err
}
