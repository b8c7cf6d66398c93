"""Two processes preparing the same cached training case at the same moment both succeed.

Seen on 2026-12-04: ``scripts/train-segmenter-folds.sh`` runs two folds side by side, both prepared
``totalseg-s0009`` at once, both wrote one fixed temporary name and the second rename failed
(``FileNotFoundError``), which killed that fold's chain. Here two threads are held, each right after writing
its temporary file, until both have written: the interleaving that failed, made deterministic.
"""

from __future__ import annotations

import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from models.segmenter import SegmenterConfig
from workers.training.segmenter_data import MaskedCase, SegmenterDataConfig, prepare_masked_case


def _write_case(folder: Path) -> MaskedCase:
    yy, xx = np.mgrid[:40, :40]
    body = ((yy - 20) / 17) ** 2 + ((xx - 20) / 18) ** 2 < 1
    liver = ((yy - 18) / 6) ** 2 + ((xx - 14) / 7) ** 2 < 1
    ct = np.where(body, 40, -1000)[None].repeat(6, 0) + np.where(liver, 80, 0)[None]
    affine = np.diag([-4.0, -4.0, 3.0, 1.0])
    for name, array in (("ct", ct.astype(np.int16)), ("liver", np.repeat(liver[None], 6, 0).astype(np.uint8))):
        nib.save(nib.Nifti1Image(array.transpose(2, 1, 0), affine), str(folder / f"{name}.nii.gz"))
    return MaskedCase("toy", "ct.nii.gz", "liver.nii.gz")


def test_two_writers_of_one_cached_case_both_succeed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = _write_case(tmp_path)
    data = SegmenterDataConfig(data_dir=str(tmp_path), cache_dir="cache", train=(case,), heldout=case)
    config = SegmenterConfig()
    both_written = threading.Barrier(2)
    savez = np.savez

    def savez_then_wait(*args: object, **kwargs: object) -> None:
        savez(*args, **kwargs)  # type: ignore[arg-type]
        both_written.wait(timeout=30)

    monkeypatch.setattr(np, "savez", savez_then_wait)
    results: list[dict[str, np.ndarray]] = []
    errors: list[BaseException] = []

    def prepare() -> None:
        try:
            results.append(prepare_masked_case(case, config, data, tmp_path))
        except BaseException as exc:  # noqa: BLE001 - the test reports what a writer raised
            errors.append(exc)

    writers = [threading.Thread(target=prepare) for _ in range(2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=60)
    assert not errors, errors
    assert len(results) == 2
    np.testing.assert_array_equal(results[0]["masks"], results[1]["masks"])
    cached = list((tmp_path / "cache").iterdir())
    assert [p.suffix for p in cached] == [".npz"], cached  # one cache file, no temporary left behind
    monkeypatch.setattr(np, "savez", savez)
    again = prepare_masked_case(case, config, data, tmp_path)  # read back from the cache
    np.testing.assert_array_equal(again["images"], results[0]["images"])
