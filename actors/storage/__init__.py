"""Storage: the model repository, the TFLite backend, registry and config files (blocking calls)."""
