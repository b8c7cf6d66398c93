"""Screenshots of every page, made from the Apache-2.0 sample (samples/totalseg-example) only, on a real stack.

    bash scripts/start-services.sh && PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python scripts/screenshots.py

starts the API and a Celery worker on a fresh PostgreSQL database and a private Redis (testkit, as the tests
do), trains the tiny scorer and segmenter of the tests on the sample (seconds: their heat-maps are those of a
barely trained model, they show the page, not a finding), pushes the sample by STOW-RS, and photographs
the pages in Debian's chromium as a radiologist and an ML engineer use them. Writes docs/screenshots/*.png.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit.pages import CONTOUR, chromium_problem, heatmaps_loaded, launch, login, prepare, push_sample  # noqa: E402
from testkit.servers import StackFactory  # noqa: E402

WIDTH, HEIGHT = 1360, 900


def _wait_job(client, job_id: int, statuses: set[str], timeout_s: float = 300) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/training-jobs/{job_id}").json()
        running = job["status"] == "running" and (job.get("progress") or {}).get("step", 0) >= 20
        if job["status"] in statuses - {"running"} or ("running" in statuses and running):
            return job
        time.sleep(0.5)
    raise SystemExit(f"training job {job_id} not {statuses} after {timeout_s} s")


def shoot(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gk-shots-") as tmp:
        count = iter(range(1000))
        factory = StackFactory(lambda name: Path(tmp) / f"{name}{next(count)}")
        try:
            stack = factory()
            s = prepare(stack, Path(tmp) / "models", series_threshold=0.5)  # the tiny scorer's sample: about 0.86
            base = stack.service.url
            with sync_playwright() as p:
                browser = launch(p)
                page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
                page.goto(f"{base}/ui/login")
                page.screenshot(path=str(out / "login.png"))
                login(page, base, stack.tokens["radiologist"], "/ui/login?next=%2Fui%2Fqueue")
                page.screenshot(path=str(out / "queue.png"), full_page=True)
                with page.expect_navigation():
                    page.locator(f"#case-{s.case_id} button.claim").click()
                heatmaps_loaded(page)
                page.screenshot(path=str(out / "case.png"), full_page=True)
                page.set_input_files("#contour-file", str(CONTOUR))
                page.click("#contour-submit")
                page.wait_for_function("document.querySelector('#case-status').textContent === 'submitted'")
                heatmaps_loaded(page)
                page.screenshot(path=str(out / "case-submitted.png"), full_page=True)
                with page.expect_navigation():
                    page.click("#logout")

                params = {"base_width": 4, "batch_size": 2, "include_base_data": False}
                with stack.client("ml_engineer") as eng:
                    done = eng.post("/training-jobs", json={"kind": "segmenter", "params": {**params, "steps": 2}})
                    _wait_job(eng, done.json()["id"], {"succeeded", "failed"})
                    long = eng.post("/training-jobs", json={"kind": "segmenter", "params": {**params, "steps": 20000}})
                    _wait_job(eng, long.json()["id"], {"running"})
                    login(page, base, stack.tokens["ml_engineer"])
                    page.screenshot(path=str(out / "models.png"), full_page=True)
                    page.goto(f"{base}/ui/training")
                    page.screenshot(path=str(out / "training.png"), full_page=True)
                    eng.post(f"/training-jobs/{long.json()['id']}/cancel")
                    eng.post(f"/models/{s.candidate_scorer}/promote")  # accepts every series: the next goes auto
                push_sample(stack, {"auto"})
                page.goto(f"{base}/ui/series")
                page.screenshot(path=str(out / "series.png"), full_page=True)
                browser.close()
        finally:
            factory.close()
    print(f"screenshots in {out}: {', '.join(sorted(p.name for p in out.glob('*.png')))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    problem = chromium_problem()
    if problem is not None:
        raise SystemExit(problem)
    shoot(args.out)


if __name__ == "__main__":
    main()
