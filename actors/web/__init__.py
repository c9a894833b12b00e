"""HTTP and WebSocket handlers: the only package that knows HTTP status codes."""
