"""The one checkpoint format of every trained model (scorer, segmenter): ``{"format", "state", "metadata"}``.

Written atomically by training, read by inference, the registry's model cards and evaluation; the
metadata carries the config, steps, data and metrics, so a file describes itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: Path, state: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Atomic write: a temporary file in the same folder, then rename over the target."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"format": CHECKPOINT_FORMAT, "state": state, "metadata": metadata}, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The whole checkpoint; ValueError when it is not in this format."""
    ckpt = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: unknown checkpoint format {found!r}")
    return ckpt
