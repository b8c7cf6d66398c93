"""The active-learning simulation's pure parts: picking, and the report's curves and paired gains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workers.evaluation.active_learning import SimulationConfig, pick
from workers.evaluation.active_learning_report import curves, paired_gain, write


def test_gate_and_uncertainty_pick_the_highest_scores_among_candidates() -> None:
    scores = {"a": np.array([0.9, 0.1, 0.5, 0.99]), "b": np.array([0.7, 0.8])}
    candidates = {"a": np.array([True, True, True, False]), "b": np.array([True, True])}  # a[3] already labelled
    got = pick("gate", scores, candidates, 3, np.random.default_rng(0))
    assert got == [("a", 0), ("b", 1), ("b", 0)]


def test_random_picks_distinct_candidates_only() -> None:
    candidates = {"a": np.array([True, False, True]), "b": np.array([False, True])}
    got = pick("random", {}, candidates, 10, np.random.default_rng(1))
    assert sorted(got) == [("a", 0), ("a", 2), ("b", 1)]


def test_config_refuses_unknown_patients_and_strategies() -> None:
    with pytest.raises(ValueError, match="unknown test patient"):
        SimulationConfig(test="nobody")
    with pytest.raises(ValueError, match="unknown strategies"):
        SimulationConfig(strategies=("gate", "oracle"))
    assert "ircadb-01" not in SimulationConfig(test="ircadb-01").pool_patients


def rows() -> list[dict]:
    out = []
    for seed, (gate, rand) in enumerate([(0.90, 0.88), (0.92, 0.89)]):
        for strategy, final in (("gate", gate), ("random", rand)):
            out.append({"strategy": strategy, "seed": seed, "round": 0, "labelled": 0, "series_dice": 0.8,
                        "final": False})  # fmt: skip
            out.append({"strategy": strategy, "seed": seed, "round": 1, "labelled": 16, "series_dice": final,
                        "final": True})  # fmt: skip
    return out


def test_curves_give_mean_and_range_over_seeds() -> None:
    c = curves(rows())
    assert c["gate"]["labelled"] == [0, 16]
    assert c["gate"]["mean"] == pytest.approx([0.8, 0.91])
    assert c["random"]["min"][1] == pytest.approx(0.88) and c["random"]["max"][1] == pytest.approx(0.89)


def test_paired_gain_pairs_by_seed() -> None:
    assert paired_gain(rows(), "gate", "random") == pytest.approx([0.02, 0.03])


def test_report_ignores_unfinished_runs(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "ircadb-01"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"seed_steps": 1, "rounds": 1, "budget": 16, "round_steps": 1,
                                                 "seeds": [0, 1]}))  # fmt: skip
    unfinished = {"strategy": "uncertainty", "seed": 0, "round": 0, "labelled": 0, "series_dice": 0.1, "final": False}
    (run / "results.jsonl").write_text("\n".join(json.dumps(r) for r in [*rows(), unfinished]) + "\n")
    summary = write(tmp_path / "runs", tmp_path / "report")
    assert set(summary["curves"]["ircadb-01"]) == {"gate", "random"}
    assert summary["final_gain"]["ircadb-01"]["gate_minus_random"]["mean"] == pytest.approx(0.025)
    assert (tmp_path / "report" / "curves.png").stat().st_size > 0
