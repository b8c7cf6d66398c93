"""GET /metrics (issue #15, item 3) scraped over real HTTP after a real push and a real decision."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.client import stow
from testkit.dicom_factory import make_series
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def scrape(stack: Stack, role: str = "monitoring") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with stack.client(role) as c:
        r = c.get("/metrics")
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def total(m: dict, name: str, **labels: str) -> float:
    """Sum over every label set that includes ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in m.items() if n == name and want <= set(ls))


def test_metrics_after_a_push_and_a_decision(stack_factory) -> None:  # type: ignore[no-untyped-def]
    # a stack of its own: on the session's shared one, other tests' series (completed by stable age, under load
    # late) were decided between the two scrapes and counted here (CI-like run: 3 decisions instead of 1)
    stack = stack_factory()
    before = scrape(stack)
    assert value(before, "gatekeeper_database_up") == 1.0
    spec, blobs = make_series(3)
    with stack.client("pacs") as pacs:
        assert stow(pacs, blobs).status_code == 200
        assert stow(pacs, blobs[:1]).status_code == 200  # a duplicate
        bad = pacs.post("/instances", content=b"not a DICOM file")
        assert bad.status_code == 400
        assert pacs.post(f"/series/{spec.series_uid}/complete").status_code == 200
    done = stack.wait_status(spec.series_uid, {"auto", "manual", "failed"}, timeout_s=120)
    after = scrape(stack)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("gatekeeper_instances_total", protocol="stow", outcome="stored") == 3
    assert delta("gatekeeper_instances_total", protocol="stow", outcome="duplicate") == 1
    assert delta("gatekeeper_instances_failed_total", protocol="peer", reason="cannot_understand") == 1
    assert delta("gatekeeper_instance_bytes_total", protocol="stow") == sum(len(b) for b in blobs)
    assert delta("gatekeeper_stored_instances") == 3
    reason = done["decision"]["reason"]
    assert delta("gatekeeper_decisions_total", route=done["decision"]["decision"], reason=reason) == 1
    for name in ("gatekeeper_completion_to_decision_seconds", "gatekeeper_scoring_seconds"):
        assert delta(f"{name}_count") == 1, name
        assert delta(f"{name}_sum") > 0, name
        assert delta(f"{name}_bucket", le="+Inf") == 1, name
    # the completion-to-decision time is the real one, within what the test itself waited
    assert 0 < delta("gatekeeper_completion_to_decision_seconds_sum") < 120
    if done["status"] == "manual":
        assert total(after, "gatekeeper_manual_queue_cases", state="open") >= 1
        assert value(after, "gatekeeper_manual_queue_oldest_case_age_seconds") > 0
    else:
        assert delta("gatekeeper_segmentation_seconds_count") == 1
    assert value(after, "gatekeeper_series", state=done["status"]) >= 1
    assert {ls for (n, ls) in after if n == "gatekeeper_training_jobs"} >= {(("state", "queued"),)}
    # the HTTP metrics hold route templates, never a UID
    assert total(after, "gatekeeper_http_requests_total", route="/series/{series_uid}/complete", status="200") >= 1
    assert not any(spec.series_uid in str(ls) or spec.study_uid in str(ls) for (_, ls) in after)


def test_metrics_need_the_monitoring_or_admin_role(stack: Stack) -> None:
    assert value(scrape(stack, "admin"), "gatekeeper_database_up") == 1.0
    for role in ("pacs", "radiologist", "ml_engineer"):
        with stack.client(role) as c:
            assert c.get("/metrics").status_code == 403, role
    with httpx.Client(base_url=stack.service.url) as c:
        assert c.get("/metrics").status_code == 401
    with stack.client("monitoring") as c:  # and Prometheus' token opens nothing else
        assert c.get("/dicomweb/studies").status_code == 403
        assert c.get("/queue").status_code == 403


def test_several_api_processes_are_summed(stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``gatekeeper serve --workers 2``: whichever process answers a scrape, it counts both processes' ingest."""
    import os
    import subprocess

    from app.processes import free_port, stop_group
    from testkit.servers import ROOT

    port = free_port()
    env = {**os.environ, **stack.service.env, "GATEKEEPER_RUN_DISPATCHER": "false"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "gatekeeper"), "serve", "--port", str(port), "--workers",
                             "2"], env=env, stdout=log, stderr=log, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {stack.tokens['pacs']}"}
        for _ in range(8):  # new connections: the kernel hands them to either process
            with httpx.Client(base_url=url, headers=headers) as pacs:
                assert stow(pacs, make_series(1)[1]).status_code == 200
        seen = set()
        for _ in range(6):
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {stack.tokens['monitoring']}"}) as c:
                r = c.get("/metrics")
            assert r.status_code == 200
            stored = sum(s.value for f in text_string_to_metric_families(r.text) for s in f.samples
                         if s.name == "gatekeeper_instances_total" and s.labels.get("outcome") == "stored")  # fmt: skip
            seen.add(stored)
        assert seen == {8.0}, seen
    finally:
        stop_group(proc)


@pytest.mark.parametrize("broker", ["redis", "filesystem"])
def test_broker_queue_depth(stack_factory, broker: str) -> None:  # type: ignore[no-untyped-def]
    """Messages waiting per Celery queue, read from the broker: with no worker, a completed series' scoring job
    waits in the scoring queue (a Redis list, or a file of the filesystem broker)."""
    overrides = {"GATEKEEPER_BROKER_URL": "filesystem://"} if broker == "filesystem" else {}
    s = stack_factory(worker=False, **overrides)
    before = scrape(s)
    assert value(before, "gatekeeper_broker_up") == 1.0
    for queue in ("scoring", "delivery", "training"):
        assert ("gatekeeper_broker_queue_messages", (("queue", queue),)) in before and value(
            before, "gatekeeper_broker_queue_messages", queue=queue) == 0  # fmt: skip
    spec, blobs = make_series(3)
    with s.client("pacs") as pacs:
        assert stow(pacs, blobs).status_code == 200
        assert pacs.post(f"/series/{spec.series_uid}/complete").status_code == 200
    s.wait_published()
    deadline = time.monotonic() + 30
    while value(m := scrape(s), "gatekeeper_broker_queue_messages", queue="scoring") != 1:
        assert time.monotonic() < deadline, f"scoring queue never showed the job: {m}"
        time.sleep(0.2)
    assert value(m, "gatekeeper_broker_queue_messages", queue="training") == 0
    if broker == "redis":  # the broker down: the scrape still answers, and says so
        s.broker.stop()  # type: ignore[attr-defined]
        down = scrape(s)
        assert value(down, "gatekeeper_broker_up") == 0.0 and value(down, "gatekeeper_database_up") == 1.0
        assert not any(name == "gatekeeper_broker_queue_messages" for name, _ in down)
