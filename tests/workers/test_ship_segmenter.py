"""Shipping a segmenter: measured on the patients it never saw, written with its card and sha256, and
refused when its training data forbids redistribution (nothing written)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.services.storage import file_sha256
from testkit.tiny_models import SAMPLE_DIR, SAMPLE_MASK, train_tiny_segmenter
from workers.training.segmenter_data import MaskedCase
from workers.training.ship_segmenter import NotShippable, ship

UNSEEN = {"unseen": MaskedCase("unseen", "totalseg-example/ct-dicom", SAMPLE_MASK)}  # the sample, by another name


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_segmenter(tmp_path_factory.mktemp("ship"))


def test_ship_measures_the_unseen_patients_and_writes_weights_card_and_sum(tiny: Path, tmp_path: Path) -> None:
    (tmp_path / "SHA256SUMS").write_text("abc  deviation.pt\n")  # another file's line is kept
    target = ship(tiny, tmp_path, data_dir=SAMPLE_DIR, patients=UNSEEN)
    metrics = torch.load(target, weights_only=False)["metadata"]["metrics"]
    assert set(metrics["unseen_patients"]) == {"unseen"}
    assert 0.0 <= metrics["unseen_series_dice_median"] == metrics["unseen_patients"]["unseen"]["dice_series"] <= 1.0
    digest = file_sha256(target)
    assert (tmp_path / "SHA256SUMS").read_text() == f"abc  deviation.pt\n{digest}  segmenter.pt\n"
    card = (tmp_path / "segmenter.card.md").read_text()
    assert digest in card and "`unseen` (held-out, measured only)" in card and "unseen_series_dice_median" in card


def test_ship_refuses_research_weights_and_writes_nothing(tiny: Path, tmp_path: Path) -> None:
    ckpt = torch.load(tiny, weights_only=False)
    ckpt["metadata"]["data"]["per_case"] = {"ircadb-17": 76}
    torch.save(ckpt, tmp_path / "research.pt")
    out = tmp_path / "weights"
    with pytest.raises(NotShippable, match="trained on ircadb-17: not all allow shipping"):
        ship(tmp_path / "research.pt", out, data_dir=SAMPLE_DIR, patients=UNSEEN)
    with pytest.raises(NotShippable, match="nothing measured"):  # every patient was a training case
        ship(tiny, out, data_dir=SAMPLE_DIR, patients={"sample": MaskedCase("sample", "x", "y")})
    assert not out.exists()
