"""The Python client of model-router: remote calls over HTTP/WebSocket, or the same models in process."""
