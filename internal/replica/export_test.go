package replica

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Accessors for tests: the value of one counter or gauge series.

func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func MetricsChunks(m *Metrics, source string) float64 {
	return value(m.chunks.WithLabelValues(source))
}

func MetricsDisappeared(m *Metrics, source, kind string) float64 {
	return value(m.disappear.WithLabelValues(source, kind))
}

func MetricsAlarm(m *Metrics, source string) float64 {
	return value(m.alarmG.WithLabelValues(source))
}
