"""Report of the active-learning simulation (``workers.evaluation.active_learning``): curves, table, summary.

    python -m workers.evaluation.active_learning_report --runs runs/active-learning --out reports/active-learning

Reads ``<runs>/<test patient>/results.jsonl`` (finished runs only) and writes ``REPORT.md``, ``summary.json``
and ``curves.png``: the test patient's series Dice after each round, per strategy, mean and the range
over training seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from app.core.plotting import pyplot
from workers.training.segmenter_folds import PATIENTS

COLOURS = {"gate": "tab:red", "uncertainty": "tab:blue", "random": "tab:gray"}


def load(runs: Path) -> dict[str, list[dict[str, Any]]]:
    """test patient -> rows of finished (strategy, seed) runs."""
    out = {}
    for results in sorted(runs.glob("*/results.jsonl")):
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        finished = {(r["strategy"], r["seed"]) for r in rows if r.get("final")}
        out[results.parent.name] = [r for r in rows if (r["strategy"], r["seed"]) in finished]
    return out


def curves(rows: list[dict[str, Any]], key: str = "series_dice") -> dict[str, dict[str, list[float]]]:
    """strategy -> labelled counts, and mean / min / max of ``key`` over seeds at each."""
    by: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        by.setdefault(r["strategy"], {}).setdefault(int(r["labelled"]), []).append(float(r[key]))
    return {
        s: {
            "labelled": sorted(points),
            "mean": [float(np.mean(points[n])) for n in sorted(points)],
            "min": [float(np.min(points[n])) for n in sorted(points)],
            "max": [float(np.max(points[n])) for n in sorted(points)],
            "seeds": [len(points[n]) for n in sorted(points)],
        }
        for s, points in by.items()
    }


def paired_gain(rows: list[dict[str, Any]], a: str, b: str) -> list[float]:
    """Final-round Dice of strategy ``a`` minus ``b``, paired by training seed."""
    last = {(r["strategy"], r["seed"]): r["series_dice"] for r in rows if r.get("final")}
    return [last[(a, s)] - last[(b, s)] for (st, s) in last if st == a and (b, s) in last]


def plot(all_curves: dict[str, dict], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(all_curves), figsize=(5 * len(all_curves), 3.6), squeeze=False)
    for ax, (patient, cs) in zip(axes[0], all_curves.items(), strict=True):
        for strategy, c in cs.items():
            colour = COLOURS.get(strategy, "k")
            ax.plot(c["labelled"], c["mean"], "-o", color=colour, label=strategy, ms=3)
            ax.fill_between(c["labelled"], c["min"], c["max"], color=colour, alpha=0.15)
        ax.set_title(f"test patient {patient}")
        ax.set_xlabel("pool slices labelled")
        ax.set_ylabel("series Dice on the test patient")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(runs: Path, out: Path) -> dict[str, Any]:
    data = load(runs)
    if not data:
        raise SystemExit(f"no finished runs under {runs}: run python -m workers.evaluation.active_learning first")
    out.mkdir(parents=True, exist_ok=True)
    all_curves = {p: curves(rows) for p, rows in data.items()}
    plot(all_curves, out / "curves.png")
    summary: dict[str, Any] = {"test_patients": sorted(data), "curves": all_curves, "final_gain": {}}
    lines = ["# Active learning, simulated (issue #14 item 7)", "",
             "Produced by `python -m workers.evaluation.active_learning_report` from the runs of "
             "`workers.evaluation.active_learning` (how the loop is simulated: that module's docstring).", "",
             "![curves](curves.png)", ""]  # fmt: skip
    for patient, rows in data.items():
        config = json.loads((runs / patient / "config.json").read_text())
        pool = ", ".join(p for p in PATIENTS if p != patient)
        counts = all_curves[patient][next(iter(all_curves[patient]))]["labelled"]
        lines += [
            f"## Test patient {patient}",
            "",
            f"Seed: TotalSegmentator sample only ({config['seed_steps']} steps); {config['rounds']} rounds of "
            f"{config['budget']} slices picked from {pool}; {config['round_steps']} fine-tuning steps per round; "
            f"training seeds {config['seeds']}. Series Dice on {patient}: mean over seeds (min-max).",
            "",
            "| strategy | " + " | ".join(f"{n} labelled" for n in counts) + " |",
            "|---|" + "---|" * len(counts),
        ]
        for strategy, c in all_curves[patient].items():
            cells = [f"{m:.3f} ({lo:.3f}-{hi:.3f})" for m, lo, hi in zip(c["mean"], c["min"], c["max"], strict=True)]
            lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
        gains = {}
        for other in ("random", "uncertainty"):
            g = paired_gain(rows, "gate", other)
            if g:
                gains[f"gate_minus_{other}"] = {"mean": float(np.mean(g)), "per_seed": g}
                lines.append(f"\nFinal round, gate minus {other}, paired by seed: mean {np.mean(g):+.3f} "
                             f"(per seed {', '.join(f'{x:+.3f}' for x in g)}).")  # fmt: skip
        summary["final_gain"][patient] = gains
        lines.append("")
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("runs/active-learning"))
    parser.add_argument("--out", type=Path, default=Path("reports/active-learning"))
    args = parser.parse_args(argv)
    write(args.runs, args.out)
    print(args.out / "REPORT.md")


if __name__ == "__main__":
    main()
