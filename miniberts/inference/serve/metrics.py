"""The server's Prometheus metrics (prometheus-client), in a registry of their own per app, served at /metrics.

With `--workers N` each process counts its own requests: a scrape reaches one of them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKENS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("miniberts_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.request_seconds = Histogram("miniberts_request_duration_seconds", "request time, body to answer",
                                         ["route"], buckets=SECONDS, registry=r)
        self.queue_seconds = Histogram("miniberts_queue_duration_seconds", "an input's wait for the model thread",
                                       buckets=SECONDS, registry=r)
        self.inference_seconds = Histogram("miniberts_inference_duration_seconds", "one forward pass",
                                           buckets=SECONDS, registry=r)
        self.queue_size = Gauge("miniberts_queue_size", "inputs queued for the model thread", registry=r)
        self.waiting = Gauge("miniberts_inputs_waiting", "inputs admitted and not yet answered "
                             "(the bound is --max-concurrent-requests)", registry=r)
        self.batch_size = Histogram("miniberts_batch_size", "inputs per forward pass", buckets=ROWS, registry=r)
        self.batch_tokens = Histogram("miniberts_batch_tokens", "padded tokens per forward pass", buckets=TOKENS,
                                      registry=r)
        self.admitted = Counter("miniberts_admitted_inputs", "inputs accepted for computing (not refused with 429)",
                                registry=r)
        self.dropped = Counter("miniberts_dropped_inputs", "inputs of gone clients dropped before computing",
                               registry=r)

    def text(self) -> bytes:
        return generate_latest(self.registry)
