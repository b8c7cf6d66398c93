"""``gatekeeper fit-failure-risk`` refuses what would make its threshold meaningless, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from testkit.tiny_models import train_tiny_segmenter

SAMPLE = "samples/totalseg-example"


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_segmenter(tmp_path_factory.mktemp("tiny-seg"))  # trained on the case named "sample"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["fit-failure-risk", *args])
    return result.exit_code, result.output


def test_a_case_the_segmenter_trained_on_is_refused(segmenter: Path, tmp_path: Path) -> None:
    case = "sample=ct-dicom:masks/liver-on-ct-dicom.nii.gz"
    code, out = run(str(segmenter), "--scorer", "models/weights/deviation.pt", "--case", case, "--case", case + "x",
                    "--case", case + "y", "--data-dir", SAMPLE, "--out", str(tmp_path / "out.pt"))  # fmt: skip
    assert code == 2 and "the segmenter trained on ['sample']" in out
    assert not (tmp_path / "out.pt").exists()


def test_fewer_than_three_cases_and_a_malformed_case_are_refused(segmenter: Path, tmp_path: Path) -> None:
    case = "other=ct-dicom:masks/liver-on-ct-dicom.nii.gz"
    code, out = run(str(segmenter), "--scorer", "models/weights/deviation.pt", "--case", case,
                    "--data-dir", SAMPLE, "--out", str(tmp_path / "out.pt"))  # fmt: skip
    assert code == 2 and "need at least 3 contoured cases" in out
    code, out = run(str(segmenter), "--scorer", "models/weights/deviation.pt", "--case", "no-mask-here",
                    "--out", str(tmp_path / "out.pt"))  # fmt: skip
    assert code == 2 and "expected NAME=CT:MASK" in out


def test_an_unknown_risk_model_is_refused_before_any_work(tmp_path: Path) -> None:
    case = "a=ct-dicom:masks/liver-on-ct-dicom.nii.gz"
    code, out = run("no-such-segmenter.pt", "--scorer", "models/weights/deviation.pt", "--case", case, "--case",
                    case, "--case", case, "--data-dir", SAMPLE, "--out", str(tmp_path / "out.pt"),
                    "--model", "forest")  # fmt: skip
    assert code == 2 and "model must be one of" in out and "forest" in out
    assert not (tmp_path / "out.pt").exists()
