"""contrib/monitoring: every query of the sql_exporter collector and of the Grafana dashboard runs
against a server with a known workload and gives what its metric or panel reads."""

import json
from pathlib import Path

import psycopg
import pytest
import yaml

from pg_imgembed.client.worker import Options, Worker
from tests import images
from tests.helpers import load_tiny

MONITORING = Path(__file__).resolve().parent.parent / "contrib" / "monitoring"
PHOTOS = [images.png(images.photo_like(40, 30, seed=i)) for i in range(4)]


@pytest.fixture
def workload(conn, dsn):
    """A worker ran (one image refused), a function call, and jobs left queued."""
    load_tiny(conn)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, photo bytea, embedding vector(4))")
    conn.execute("SELECT imgembed.create_embedding_trigger('items', 'photo', 'embedding', mode => 'async')")
    conn.execute("INSERT INTO items SELECT g, (%s::bytea[])[g] FROM generate_series(1, 5) g", (PHOTOS + [b"not an image"],))
    Worker(dsn, Options(), name="monitored")._heartbeat(conn)  # a worker alive: its heartbeat stays while it runs
    Worker(dsn, Options(once=True)).run()
    conn.execute("SELECT img_embedding(%s)", (PHOTOS[0],))
    conn.execute("INSERT INTO items VALUES (6, %s)", (PHOTOS[1],))
    return conn


def rows(conn: psycopg.Connection, query: str) -> tuple[list[str], list[tuple]]:
    cur = conn.execute(query)
    return [d.name for d in cur.description], cur.fetchall()


def test_every_collector_query_gives_its_metrics_columns(workload):
    collector = yaml.safe_load((MONITORING / "pg_imgembed.collector.yml").read_text())
    queries = {q["query_name"]: q["query"] for q in collector["queries"]}
    for metric in collector["metrics"]:
        assert metric["metric_name"].startswith("pg_imgembed_") and metric["type"] in ("gauge", "counter")
        columns, found = rows(workload, queries[metric["query_ref"]])
        assert found, metric["metric_name"]  # the workload gives every metric a sample
        assert set(metric["key_labels"]) | set(metric["values"]) <= set(columns), metric["metric_name"]
        for row in found:
            sample = dict(zip(columns, row))
            assert all(sample[v] is not None for v in metric["values"]), (metric["metric_name"], sample)
            assert all(isinstance(sample[k], str) for k in metric["key_labels"]), (metric["metric_name"], sample)
    assert set(queries) == {m["query_ref"] for m in collector["metrics"]}  # no query unused
    _, refused = rows(workload, queries["model_refusals"])
    assert refused == [("tiny", "image", "worker", "22P03", 1)]


def test_every_dashboard_panel_query_runs_and_has_rows(workload):
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Throughput (jobs/s per table)", "Queue depth and ETA", "Failed jobs per minute",
            "Refused images by model and SQLSTATE", "Latency per model (ms per image)", "Workers"} == titles
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert target["datasource"]["type"] == "grafana-postgresql-datasource"
            columns, found = rows(workload, target["rawSql"])
            assert found, panel["title"]
            if target["format"] == "time_series":
                assert columns == ["time", "metric", "value"], panel["title"]
    _, queue = rows(workload, next(p for p in dashboard["panels"] if p["title"] == "Queue depth and ETA")["targets"][0]["rawSql"])
    assert queue[0][:4] == ("items", "embedding", 1, 0) and queue[0][5] is not None  # an ETA: workers ran lately
