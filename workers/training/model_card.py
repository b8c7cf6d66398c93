"""Model cards: what a weight file was trained on, under which licences, how far, and how it measured.

A card is built from the checkpoint's own metadata (the training code records its config, steps,
data and metrics there), so it cannot drift from the weights; the sha256 names the exact file.
The registry stores the card with every version; training writes it as Markdown beside the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from app.services.registry import KINDS, RegistryError
from app.services.storage import file_sha256

# (case-name prefix, licence as its source states it, may weights trained on it be redistributed).
# From ../shared/data/MANIFEST.md; unknown or unverified terms count as "no".
DATA_LICENCES: tuple[tuple[str, str, bool], ...] = (
    ("ircadb", "3D-IRCADb-01, CC BY-NC-ND 4.0 (non-commercial, no derivatives)", False),
    ("totalseg-example", "TotalSegmentator test fixtures, Apache-2.0", True),
    ("totalseg-s0009", "TotalSegmentator dataset subject s0009, CC BY 4.0 (Wasserthal et al. 2023; attribution)", True),
    ("sample", "samples/totalseg-example, Apache-2.0", True),
    ("dcmqi", "QIICR dcmqi test data, BSD-3-Clause", True),
    ("cptac", "TCIA CPTAC C3N-00247, CC BY 3.0 as TCIA lists it (not verified)", False),
    ("johndoe", "course sample without licence or provenance", False),
    ("series-", "this site's own series (confirmed normal): governed by the site", False),
    ("case-", "this site's own contoured cases: governed by the site", False),
)
INTENDED_USE = {
    "scorer": "flag CT series (and slices) unlike the normal training set, so that a radiologist contours them; "
    "not a diagnostic device",
    "segmenter": "liver mask on CT series the gate accepted, for review; not a diagnostic device",
}


def licence_of(case: str) -> tuple[str, bool]:
    for prefix, licence, redistributable in DATA_LICENCES:
        if case.startswith(prefix):
            return licence, redistributable
    return "unknown: not in the licence table", False


def _scorer_part(md: dict[str, Any]) -> dict[str, Any]:
    config = md["config"]
    calibration = md.get("calibration", {})
    return {
        "kind": "scorer",
        "architecture": f"{config.get('detector', 'fanogan')} "
        f"({'position-conditioned' if config['model'].get('conditional') else 'unconditioned'})",
        "steps": {"gan": md.get("gan_step"), "encoder": md.get("encoder_step")},
        "planned_steps": {"gan": config.get("gan_steps"), "encoder": config.get("encoder_steps")},
        "config": {
            "model": config["model"],
            "preprocess": config["data"]["preprocess"],
            "scoring_region": md.get("roi") or "whole view",
        },  # fmt: skip
        "train_cases": sorted(md.get("data", {}).get("per_case", {})),
        "heldout_cases": sorted(c["name"] for c in config["data"].get("heldout", [])),
        "metrics": {
            k: calibration[k] for k in ("threshold", "series_threshold", "target_fpr", "fpr") if k in calibration
        },  # fmt: skip
    }


def _patch_scorer_part(md: dict[str, Any]) -> dict[str, Any]:
    config = md["config"]
    calibration = md.get("calibration", {})
    model = config["model"]
    return {
        "kind": "scorer",
        "architecture": f"patch {model['detector']} {model['patch_size']} px at {config['grid']['pixel_mm']} mm, "
        f"{'position-conditioned' if model.get('conditional') else 'unconditioned'}",
        "steps": md.get("steps"),
        "planned_steps": {"gan": config.get("gan_steps"), "encoder": config.get("encoder_steps")},
        "config": {
            "model": model,
            "grid": config["grid"],
            "scoring": config["scoring"],
            "scoring_region": md.get("roi") or "liver",
        },  # fmt: skip
        "train_cases": sorted(config.get("train", [])),
        "heldout_cases": sorted(calibration.get("patients", {})),
        "metrics": {k: calibration[k] for k in ("threshold", "series_threshold", "target_fpr") if k in calibration},
        "train_minutes": md.get("train_minutes"),
    }


def _segmenter_part(md: dict[str, Any]) -> dict[str, Any]:
    config = md["config"]
    heldout = config["data"].get("heldout") or {}
    return {
        "kind": "segmenter",
        "architecture": "MONAI residual UNet, 2.5D (liver)",
        "steps": {"train": md.get("step")},
        "planned_steps": {"train": config.get("steps")},
        "config": {
            "model": config.get("model"),
            "data": {k: v for k, v in config["data"].items() if k not in ("train", "heldout")},
            **({"augment": config["augment"]} if "augment" in config else {}),  # the recipe, lung ring included
        },  # fmt: skip
        "train_cases": sorted(md.get("data", {}).get("per_case", {})),
        # the in-training held-out case and the patients it was measured on before shipping (ship_segmenter)
        "heldout_cases": sorted({heldout.get("name"), *(md.get("metrics") or {}).get("unseen_patients", {})} - {None}),
        "metrics": md.get("metrics") or {},
    }


def build_card(checkpoint: Path) -> dict[str, Any]:
    """The card of one checkpoint written by train-scorer or train-segmenter."""
    md = torch.load(checkpoint, map_location="cpu", weights_only=False)["metadata"]
    kind = md.get("kind")
    part = (
        _segmenter_part(md)
        if kind == "liver-segmenter"
        else _patch_scorer_part(md)
        if kind == "patch-scorer"
        else _scorer_part(md)
    )
    licences = {case: licence_of(case) for case in part["train_cases"] + part["heldout_cases"]}
    # a scorer's held-out cases set its stored threshold; a segmenter's held-out case is only measured (its
    # final checkpoint is the last step's, never selected on that case), so it does not bind the weights
    binding = part["train_cases"] + ([] if part["kind"] == "segmenter" else part["heldout_cases"])
    redistributable = all(licences[case][1] for case in binding)
    return {
        "file": checkpoint.name,
        "sha256": file_sha256(checkpoint),
        **part,
        "licences": {case: text for case, (text, _) in licences.items()},
        "redistributable": redistributable,
        "weights_note": "may be redistributed under the data's licences"
        if redistributable
        else "research weights: never commit or redistribute (see the licences above)",
        "intended_use": INTENDED_USE[part["kind"]],
    }


def checked_card(checkpoint: Path, kind: str, **extra: Any) -> dict[str, Any]:
    """The card the registry stores for ``checkpoint`` (with ``extra`` keys beside the built ones);
    RegistryError when the file is not a checkpoint of train-scorer or train-segmenter, or of another kind."""
    if kind not in KINDS:
        raise RegistryError(f"unknown model kind {kind!r}; one of {', '.join(KINDS)}")
    try:
        built = build_card(checkpoint)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is refused the same way
        raise RegistryError(f"{checkpoint.name} is not a checkpoint written by train-scorer or train-segmenter "
                            f"({type(exc).__name__})") from exc  # fmt: skip
    if built["kind"] != kind:
        raise RegistryError(f"{checkpoint.name} is a {built['kind']} checkpoint, not a {kind}")
    return {**built, **extra}


def card_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown (MODEL_CARD beside the weights, and ``gatekeeper models card``)."""
    lines = [f"# Model card: {card['kind']} `{card['file']}`", "", f"- sha256: `{card['sha256']}`",
             f"- architecture: {card['architecture']}", f"- intended use: {card['intended_use']}",
             f"- trained steps: {card['steps']} of {card['planned_steps']} planned",
             f"- weights: {card['weights_note']}", "", "## Data", ""]  # fmt: skip
    for case, licence in card["licences"].items():
        role = "train"
        if case in card["heldout_cases"]:
            role = "held-out, measured only" if card["kind"] == "segmenter" else "held-out"
        lines.append(f"- `{case}` ({role}): {licence}")
    lines += ["", "## Metrics", ""]
    lines += [f"- {k}: {v}" for k, v in card["metrics"].items()] or ["- none recorded"]
    config = (f"{k}: {json.dumps(v)}" for k, v in card["config"].items())
    lines += ["", "## Training configuration", "", "```", *config, "```", ""]
    return "\n".join(lines)


def write_card(checkpoint: Path) -> Path:
    """MODEL_CARD for ``checkpoint``: ``<name>.card.md`` beside it; returns its path."""
    path = checkpoint.with_name(f"{checkpoint.stem}.card.md")
    path.write_text(card_markdown(build_card(checkpoint)))
    return path
