"""``pg-imgembed worker --metrics-port``: the worker's own metrics, in Prometheus text format.

Off unless asked for; served by ``prometheus_client`` from a thread of the worker, on the host
and port given (default host 127.0.0.1: a worker's metrics name tables and models, so they are
not published beyond the host unless an operator binds them wider).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Decode of a photo: ~1 ms (thumbnail) to ~200 ms (12 MP); inference of a batch: ~1 ms to seconds.
DECODE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.embedded = Counter("pg_imgembed_worker_rows_embedded", "Rows whose vector the worker wrote",
                                ("model", "table"), registry=r)
        self.failed = Counter("pg_imgembed_worker_rows_failed", "Rows the worker gave up on, by SQLSTATE",
                              ("model", "table", "sqlstate"), registry=r)
        self.decode = Histogram("pg_imgembed_worker_decode_seconds", "Decode time per image", ("model",),
                                buckets=DECODE_BUCKETS, registry=r)
        self.preprocess = Histogram("pg_imgembed_worker_preprocess_seconds", "Preprocessing time per image", ("model",),
                                    buckets=DECODE_BUCKETS, registry=r)
        self.inference = Histogram("pg_imgembed_worker_inference_seconds", "onnxruntime time per batch", ("model",),
                                   buckets=INFERENCE_BUCKETS, registry=r)
        self.batch_size = Histogram("pg_imgembed_worker_batch_size", "Images per onnxruntime run", ("model",),
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_lag = Gauge("pg_imgembed_worker_queue_lag_seconds",
                               "Age of the oldest job in the batch last claimed, per table", ("table",), registry=r)
        self.leases = Counter("pg_imgembed_worker_leases_taken", "Jobs claimed under a lease", ("table",), registry=r)
        self.expired = Counter("pg_imgembed_worker_lease_expiries",
                               "Jobs claimed again because an earlier worker's lease on them ran out", ("table",), registry=r)

    def observer(self, model: str) -> Callable[[str, float, int], None]:
        """What a Meter calls with each timed step of ``model`` (see pg_imgembed.model_stats)."""
        histograms = {"decode": self.decode.labels(model), "preprocess": self.preprocess.labels(model),
                      "inference": self.inference.labels(model)}
        batch_size = self.batch_size.labels(model)

        def observe(phase: str, ms: float, batch: int) -> None:
            histograms[phase].observe(ms / 1000.0)
            if batch:
                batch_size.observe(batch)

        return observe

    def serve(self, port: int, host: str) -> None:
        start_http_server(port, addr=host, registry=self.registry)
