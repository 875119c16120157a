"""``/metrics`` parsed with Prometheus's own text parser, over the real store the syncs filled."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from models.schema import SyncRun
from tests.api.conftest import FAILING, HELD, NEVER, OK, ApiServer, Deployment
from tests.upstream import Upstream


def scrape(api: ApiServer) -> dict[str, list]:
    response = api.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def test_metrics_say_each_dataset_state_and_the_run_history(api: ApiServer) -> None:
    metrics = scrape(api)
    states = {s.labels["dataset"]: s.labels["state"] for s in metrics["datasync_dataset_state"] if s.value == 1}
    assert states == {OK: "ok", FAILING: "failing", HELD: "held", NEVER: "never_synced"}
    assert len(metrics["datasync_dataset_state"]) == 4 * 7
    failures = {s.labels["dataset"]: s.value for s in metrics["datasync_dataset_consecutive_failures"]}
    assert failures[FAILING] == 3 and failures[OK] == 0
    options = {s.labels["dataset"]: s.value for s in metrics["datasync_dataset_options"]}
    assert options[OK] == 7 and options[NEVER] == 0
    success = {s.labels["dataset"] for s in metrics["datasync_dataset_last_success_timestamp_seconds"]}
    assert success == {OK, FAILING, HELD}
    runs = {
        (s.labels["status"], s.labels["error_kind"]): s.value
        for s in metrics["datasync_runs"]
        if s.name.endswith("_total")
    }
    assert runs[("created", "")] == 3 and runs[("failed", "http_404")] == 3 and runs[("held", "held")] == 1
    histogram = {(s.name, s.labels.get("le")): s.value for s in metrics["datasync_sync_duration_seconds"]}
    assert histogram[("datasync_sync_duration_seconds_count", None)] == 7
    assert histogram[("datasync_sync_duration_seconds_bucket", "+Inf")] == 7
    assert histogram[("datasync_sync_duration_seconds_bucket", "0.1")] <= 7
    up = {s.labels["component"]: s.value for s in metrics["datasync_component_up"]}
    assert up == {"store": 1, "broker": 0, "workers": 0, "scheduler": 0}


def test_metrics_follow_time_and_can_require_a_key(api: ApiServer, deployment: Deployment) -> None:
    deployment.clock.shift(hours=24 * 15)
    states = {s.labels["dataset"]: s.labels["state"] for s in scrape(api)["datasync_dataset_state"] if s.value == 1}
    assert states[OK] == "stale"
    with deployment.serve(api_public_status=False) as private:
        assert private.get("/metrics").status_code == 401
        assert private.get("/status").status_code == 401
        assert private.get("/metrics", deployment.keys.viewer).status_code == 200


def test_bytes_fetched_sum_each_dataset_s_runs(api: ApiServer, deployment: Deployment, upstream: Upstream) -> None:
    entries = deployment.catalogue.by_key()
    fetched = {s.labels["dataset"]: s.value for s in scrape(api)["datasync_bytes_fetched"] if s.name.endswith("_total")}
    ok_body = upstream.body_for(upstream.url_path(entries[OK].url)) or b""
    held_body = upstream.body_for(upstream.url_path(entries[HELD].url)) or b""
    with deployment.ctx.sessions() as session:
        held_runs = [run.bytes_fetched for run in session.scalars(select(SyncRun).where(SyncRun.dataset_key == HELD))]
    assert len(held_runs) == 2 and held_runs[1] == len(held_body) > 0
    assert fetched[OK] == len(ok_body) > 0
    assert fetched[HELD] == held_runs[0] + held_runs[1]
    assert NEVER not in fetched
