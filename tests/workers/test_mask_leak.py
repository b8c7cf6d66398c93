"""workers.evaluation.mask_leak on a real case: the shipped segmenter's liver on ircadb-07 against IRCAD's
extrahepatic mass (the areas must add up; the leak into the mass is what the README reports)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.evaluation.mask_leak import leak_table

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
MASS = "ct/ircadb-07/masks/extrahepatic-mass.nii.gz"


def test_the_leak_table_adds_up_on_ircadb_07() -> None:
    if not (DATA / MASS).exists():
        pytest.skip(f"ircadb-07 is not under {DATA.resolve()} (3D-IRCADb, never committed)")
    weights = Path(__file__).resolve().parents[2] / "models" / "weights" / "segmenter.pt"
    table = leak_table(weights, "ircadb-07", MASS, DATA.resolve())
    t = table["totals_cm2"]
    assert t["predicted"] - t["reference"] == pytest.approx(t["extra"] - t["missed"], abs=0.5)
    assert 0 < t["extra_in_structure"] <= t["extra"]
    assert table["structure_median_hu"] < table["liver_median_hu"] - 50  # the mass is darker than the liver
    assert len(table["slices"]["extra"]) == 151
