package httpapi

import (
	"context"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
)

// ClusterView is the cluster as the API reads it (daemon/cluster's
// member, handed over by the daemon's wiring; nil when this host is in
// no cluster).
type ClusterView interface {
	Hosts(ctx context.Context) ([]api.ClusterHost, error)
	Instances(ctx context.Context) ([]api.ClusterInstance, error)
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
