package metrics

import "github.com/prometheus/client_golang/prometheus"

// Operations is the operations counter, for testutil.ToFloat64.
func (m *Metrics) Operations() *prometheus.CounterVec { return m.operations }
