"""`pg-imgembed worker --metrics-port`: the endpoint scraped and parsed as Prometheus reads it."""

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pg_imgembed.client.cli import parser
from pg_imgembed.client.worker import Options, Worker
from pg_imgembed.client.worker_metrics import WorkerMetrics
from tests import images
from tests.devcluster import free_port
from tests.helpers import load_tiny

PHOTOS = [images.png(images.photo_like(40, 30, seed=i)) for i in range(5)]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture(scope="module")
def served():
    metrics, port = WorkerMetrics(), free_port()
    metrics.serve(port, "127.0.0.1")
    return metrics, port


def test_the_worker_serves_its_counts_histograms_and_lag(conn, dsn, served, request):
    if request.node.callspec.params["dsn"] != "serial":
        pytest.skip("one registry per process: counted once")
    metrics, port = served
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', mode => 'async')")
    conn.execute("INSERT INTO items SELECT g, (%s::bytea[])[g] FROM generate_series(1, 6) g", (PHOTOS + [b"not an image"],))
    # two jobs whose earlier worker's lease ran out
    conn.execute("UPDATE imgembed.queue SET claimed_by = 'gone', claimed_until = now() - interval '1 second' "
                 "WHERE row_key->>'id' IN ('1', '2')")
    worker = Worker(dsn, Options(once=True, batch_size=4), metrics=metrics)
    worker.run()
    assert (worker.done, worker.failed) == (5, 1)
    got = scrape(port)
    table, model = ("table", "items"), ("model", "tiny")
    assert got[("pg_imgembed_worker_rows_embedded_total", (model, table))] == 5
    assert got[("pg_imgembed_worker_rows_failed_total", (model, ("sqlstate", "22P03"), table))] == 1
    assert got[("pg_imgembed_worker_leases_taken_total", (table,))] == 6
    assert got[("pg_imgembed_worker_lease_expiries_total", (table,))] == 2
    assert got[("pg_imgembed_worker_decode_seconds_count", (model,))] == 6  # the bad image was decoded too
    assert got[("pg_imgembed_worker_preprocess_seconds_count", (model,))] == 5
    assert got[("pg_imgembed_worker_inference_seconds_count", (model,))] == 2  # batches of 4 and 2 jobs
    assert got[("pg_imgembed_worker_batch_size_sum", (model,))] == 5
    assert got[("pg_imgembed_worker_batch_size_bucket", (("le", "4.0"), model))] == 2
    assert got[("pg_imgembed_worker_inference_seconds_sum", (model,))] > 0
    assert got[("pg_imgembed_worker_queue_lag_seconds", (table,))] > 0


def test_metrics_are_off_by_default_and_bind_where_told():
    args = parser().parse_args(["worker"])
    assert (args.metrics_port, args.metrics_host) == (None, "127.0.0.1")
    args = parser().parse_args(["worker", "--metrics-port", "9187", "--metrics-host", "0.0.0.0"])
    assert (args.metrics_port, args.metrics_host) == (9187, "0.0.0.0")
