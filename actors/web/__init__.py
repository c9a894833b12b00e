"""Web: HTTP and WebSocket handlers, the hot path, and the one place that maps errors to statuses."""
