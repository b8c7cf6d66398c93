"""The pages' scenario on a real stack, from the Apache-2.0 sample only: a scored manual case with evidence,
a promoted scorer and a candidate one. Shared by tests/integration/test_pages_browser.py and
scripts/screenshots.py; and the browser helpers both use (Debian's chromium, never a downloaded browser)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from app.client import stow
from app.services import splits
from testkit.servers import ROOT, Stack, register_model
from testkit.tiny_models import (
    ALL_MANUAL,
    SAMPLE_DIR,
    SAMPLE_MASK,
    sample_visit,
    train_tiny_scorer,
    train_tiny_segmenter,
    with_series_threshold,
)

CHROMIUM = Path(os.environ.get("GATEKEEPER_CHROMIUM", "/usr/bin/chromium"))
CONTOUR = SAMPLE_DIR / SAMPLE_MASK  # the sample's liver mask, on the sample's own grid


@dataclass
class Scenario:
    case_id: int
    series_uid: str
    study_uid: str
    promoted_scorer: int
    candidate_scorer: int


def chromium_problem() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if not CHROMIUM.is_file() and shutil.which("chromium") is None:
        return f"chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "python playwright not installed (pip install -e '.[test]')"
    return None


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])


def register_candidate(env: dict[str, str], kind: str, path: Path, metrics: dict[str, float] | None = None) -> int:
    """Register without promoting (``gatekeeper models register``); the new version's id."""
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "gatekeeper"), "models", "register", "--kind", kind, "--file",
                          str(path)], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True)  # fmt: skip
    return int(out.stdout.split("(id ")[1].split(")")[0])


def prepare(stack: Stack, tmp: Path, series_threshold: float = ALL_MANUAL) -> Scenario:
    """A promoted scorer that sends the sample to a radiologist (its series threshold: ``series_threshold``),
    a candidate scorer that accepts every series, a segmenter; then the sample pushed by STOW-RS and scored
    into the manual queue (with its evidence file)."""
    tmp.mkdir(parents=True, exist_ok=True)
    scorer = train_tiny_scorer(tmp / "scorer")
    promoted = register_model(stack.service.env, "scorer", with_series_threshold(scorer, series_threshold,
                                                                                tmp / "m.pt"))  # fmt: skip
    candidate = register_candidate(stack.service.env, "scorer", with_series_threshold(scorer, 1e9, tmp / "a.pt"))
    register_model(stack.service.env, "segmenter", train_tiny_segmenter(tmp / "segmenter"))
    for model_id, fpr in ((promoted, 0.08), (candidate, 0.05)):  # gate metrics, as a training job records them
        stack.scalar("UPDATE model_versions SET metrics = CAST(:m AS json) WHERE id = :i RETURNING id",
                     m=f'{{"test_fpr_at_threshold": {fpr}, "threshold": 0.5}}', i=model_id)  # fmt: skip
    study, series, state = push_sample(stack, {"manual"})
    case_id = int(stack.scalar("SELECT id FROM cases WHERE series_id = :i", i=state["id"]))  # type: ignore[arg-type]
    return Scenario(case_id, series, study, promoted, candidate)


def train_split_patient(prefix: str) -> str:
    """A new patient ID that ``app.services.splits`` puts in the train split: the pages' training job learns
    from this patient's contour, and a patient drawn into the test split (15 % of IDs) leaves it no data."""
    n = time.monotonic_ns()
    while splits.choose(splits.patient_key(SimpleNamespace(patient_id=f"{prefix}-{n}", study_uid=""))) != "train":
        n += 1
    return f"{prefix}-{n}"


def push_sample(stack: Stack, statuses: set[str]) -> tuple[str, str, dict[str, Any]]:
    """A new visit of the sample by STOW-RS, completed and followed until its series is in ``statuses``."""
    study, series, blobs = sample_visit(train_split_patient("pages"))
    with stack.client("pacs") as c:
        assert stow(c, blobs).status_code == 200
        c.post(f"/series/{series}/complete")
    return study, series, stack.wait_status(series, statuses, timeout_s=180)


def login(page: Any, base: str, token: str, path: str = "/ui") -> None:
    page.goto(f"{base}{path}")
    page.fill("input[name=token]", token)
    with page.expect_navigation():
        page.click("form[action='/ui/login'] button[type=submit]")


def heatmaps_loaded(page: Any) -> list[int]:
    """The natural widths of the case page's heat-map images, once each has loaded (0: failed to load)."""
    page.wait_for_function("[...document.querySelectorAll('img.heatmap')].every(i => i.complete)")
    return page.eval_on_selector_all("img.heatmap", "imgs => imgs.map(i => i.naturalWidth)")
