package lifecycle

import (
	"context"
	"time"

	"github.com/labvm/labvm/vm"
)

// Names is the cluster's registry of instance names and cores as a
// create and a delete see it. nil when the host is in no cluster. The
// daemon's wiring adapts daemon/cluster to it; the lifecycle never sees
// etcd.
type Names interface {
	// Reserve takes the name for this host across the cluster, checking
	// the cluster's core quota for the size in the same transaction. It
	// fails when the name is taken on any host, the quota would be
	// exceeded, or the registry cannot be reached (a create then changes
	// nothing).
	Reserve(ctx context.Context, r NameReservation) error
	// Release gives a name of this host back. A release that cannot reach
	// the registry is left to the registry's own reconciliation.
	Release(ctx context.Context, name string)
}

// NameReservation is what a create asks of the cluster.
type NameReservation struct {
	Name   string
	Owner  string
	Family string
	VCPUs  int
}

// namesTimeout bounds a reservation: a create the registry cannot answer
// in time is refused rather than left waiting.
const namesTimeout = 10 * time.Second

// reserveName reserves inst's name in the cluster, when there is one.
func (e *Engine) reserveName(inst vm.Instance) error {
	if e.names == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), namesTimeout)
	defer cancel()
	return e.names.Reserve(ctx, NameReservation{Name: inst.Name, Owner: inst.Owner(), Family: inst.Size.Family, VCPUs: inst.Size.VCPUs})
}

// releaseName gives the name back to the cluster, when there is one.
func (e *Engine) releaseName(name string) {
	if e.names == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), namesTimeout)
	defer cancel()
	e.names.Release(ctx, name)
}
