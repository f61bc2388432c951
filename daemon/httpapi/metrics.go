package httpapi

import (
	"net/http"

	"github.com/labvm/labvm/daemon/errdefs"
)

// metrics serves the Prometheus text format to owners on the socket. It
// names every instance and its user, hence not to readers; the optional
// TCP listener (metrics_listen) serves the same with no check at all.
func (s *Server) metrics(w http.ResponseWriter, c call) error {
	if s.Metrics == nil {
		return errdefs.New(errdefs.ErrUnavailable, "", "this labvmd has no metrics")
	}
	s.Metrics.ServeHTTP(w, c.r)
	return nil
}
