"""HTTP and WebSocket handlers: the only layer that knows HTTP status codes."""
