"""The learned detectors' fusion with the deviation rule (patch_report.add_fusion): pure logic on made-up folds."""

from __future__ import annotations

import numpy as np

from workers.evaluation.patch_report import add_fusion, fusion_name


def _detector(base: list[float], modified: list[float]) -> dict:
    idx = [0, 1]
    heat = np.asarray(modified, dtype=np.float32)
    return {"base_scores": base, "tests": {"blob": {"modified": modified, "base": [base[i] for i in idx],
                                                    "bins": ["", ""], "groups": ["a", "b"], "pixel_heat": heat,
                                                    "pixel_positive": np.array([True, False]),
                                                    "pixel_base_heat": heat / 2}}}  # fmt: skip


def _fold(learned: dict[str, dict], rule: dict | None) -> dict:
    dets = dict(learned)
    if rule is not None:
        dets["deviation"] = rule
    return {"host": "h", "normal_slices": [0, 1, 2], "detectors": dets}


def test_each_learned_detector_is_fused_with_the_rule_on_the_other_folds_scale() -> None:
    folds = {
        "A": _fold(
            {"inpaint": _detector([1, 1, 1], [3, 1]), "fanogan": _detector([2, 2, 2], [2, 2])},
            _detector([10, 10, 10], [10, 30]),
        ),  # fmt: skip
        "B": _fold({"inpaint": _detector([4, 4, 4], [4, 4])}, _detector([20, 20, 20], [20, 20])),
    }
    add_fusion(folds)
    a = folds["A"]["detectors"]
    assert fusion_name("inpaint") == "inpaint+deviation"
    assert {"inpaint+deviation", "fanogan+deviation"} <= set(a)
    # fold A is scaled by fold B's normal medians (inpaint 4, rule 20), never by its own
    np.testing.assert_allclose(a["inpaint+deviation"]["base_scores"], [1 / 4 + 10 / 20] * 3)
    np.testing.assert_allclose(a["inpaint+deviation"]["tests"]["blob"]["modified"], [3 / 4 + 10 / 20, 1 / 4 + 30 / 20])
    # fold B has no fanogan: no fanogan fusion there; fanogan in fold A falls back to fold A's own median
    assert "fanogan+deviation" not in folds["B"]["detectors"]
    np.testing.assert_allclose(a["fanogan+deviation"]["base_scores"], [2 / 2 + 10 / 20] * 3)
    # the inputs are left as they were
    assert folds["A"]["detectors"]["inpaint"]["tests"]["blob"]["modified"] == [3, 1]


def test_no_fusion_without_the_rule() -> None:
    folds = {"A": _fold({"inpaint": _detector([1, 1, 1], [1, 1])}, None)}
    add_fusion(folds)
    assert set(folds["A"]["detectors"]) == {"inpaint"}
