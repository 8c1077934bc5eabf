"""Inference: batching, prediction, export, engine backends, and the HTTP server (serve/)."""
