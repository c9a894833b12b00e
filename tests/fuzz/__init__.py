"""Property-based fuzzing of every route of both ports, the WebSockets and the data plane's raw HTTP."""
