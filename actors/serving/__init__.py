"""Serving: the predictor, answer shaping, the batcher and metrics, used by both HTTP ports."""
