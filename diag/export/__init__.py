"""``coroscope export``: Prometheus metrics and continuous pprof profiles of traced processes."""
