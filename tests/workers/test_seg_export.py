"""Segmenter pipeline on the workers side: inference on a series grid, checkpoints, DICOM SEG and NIfTI I/O.

Synthetic series from testkit/dicom_factory.py (fresh UIDs); the dcmqi-3slice
DICOM SEG is read against its 3 CT slices when the data directory holds it.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from app.dicom.seg import geometry_affine, read_nifti_mask, read_seg_mask, write_nifti, write_seg
from app.dicom.volume import SeriesGeometry, order_and_check, to_hu
from models.metrics import dice
from models.segmenter import LiverSegmenter, SegmenterConfig
from models.transforms import PreprocessConfig
from testkit.dicom_factory import SeriesSpec, ct_dataset
from workers.inference.checkpoint import save_checkpoint
from workers.inference.segmenter import load_segmenter, segment_volume

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("GATEKEEPER_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
SHA = "0" * 64


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*person name.*")


def series(n: int = 5, rows: int = 32, cols: int = 32) -> tuple[list[pydicom.Dataset], SeriesGeometry]:
    """Datasets ordered as ``load_series_volume`` orders them (ascending along the normal) and their geometry."""
    spec = SeriesSpec(n=n, rows=rows, cols=cols, study_uid=pydicom.uid.generate_uid(),
                      series_uid=pydicom.uid.generate_uid())  # fmt: skip
    datasets = [pydicom.dcmread(io.BytesIO(_bytes(ct_dataset(spec, i)))) for i in range(n)]
    order, geometry = order_and_check(datasets)
    return [datasets[i] for i in order], geometry


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def liver_like(shape: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[1:-1, 8:20, 5:25] = 1  # first and last slices empty: frames omitted from the SEG
    mask[2, 10:12, 10:12] = 0
    return mask


def reread(ds: pydicom.Dataset) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(_bytes(ds)))


def test_seg_round_trip_and_header() -> None:
    datasets, _ = series()
    mask = liver_like((5, 32, 32))
    seg = reread(write_seg(mask, datasets, algorithm_name="liver-unet", algorithm_version="0.1", model_sha256=SHA))
    assert np.array_equal(read_seg_mask(seg, datasets), mask)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert int(seg.NumberOfFrames) == 3  # empty frames omitted
    assert seg.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == datasets[0].SeriesInstanceUID
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "Liver"
    assert (segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator,
            segment.SegmentedPropertyTypeCodeSequence[0].CodeValue) == ("SCT", "10200004")  # fmt: skip
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"  # SCT Anatomical Structure
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert SHA in str(algorithm.AlgorithmParameters)


def test_seg_of_an_empty_mask_keeps_all_frames() -> None:
    datasets, _ = series()
    seg = reread(write_seg(np.zeros((5, 32, 32), np.uint8), datasets, algorithm_name="a", algorithm_version="1",
                           model_sha256=SHA))  # fmt: skip
    assert int(seg.NumberOfFrames) == 5 and read_seg_mask(seg, datasets).sum() == 0


def test_seg_refuses_mask_on_another_grid() -> None:
    datasets, _ = series()
    with pytest.raises(ValueError, match=r"mask slices are \(30, 32\) but the source images are \(32, 32\)"):
        write_seg(np.zeros((5, 30, 32), np.uint8), datasets, algorithm_name="a", algorithm_version="1",
                  model_sha256=SHA)  # fmt: skip


def test_seg_from_sparse_headers_leaves_the_sources_untouched() -> None:
    """Anonymised sources: no PatientBirthDate / PatientSex (the factory writes none), empty SOP UIDs."""
    datasets, _ = series()
    for ds in datasets:
        ds.SOPClassUID, ds.SOPInstanceUID = "", ""  # the file meta keeps them
    mask = liver_like((5, 32, 32))
    seg = write_seg(mask, datasets, algorithm_name="a", algorithm_version="1", model_sha256=SHA)
    assert np.array_equal(read_seg_mask(reread(seg), datasets), mask)
    assert datasets[0].SOPClassUID == "" and "PatientBirthDate" not in datasets[0]
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    assert referenced == datasets[0].file_meta.MediaStorageSOPInstanceUID


def test_seg_refuses_series_without_frame_of_reference() -> None:
    datasets, _ = series()
    del datasets[2].FrameOfReferenceUID
    with pytest.raises(ValueError, match=r"1 source image\(s\) have no FrameOfReferenceUID \(e.g. index 2\)"):
        write_seg(np.zeros((5, 32, 32), np.uint8), datasets, algorithm_name="a", algorithm_version="1",
                  model_sha256=SHA)  # fmt: skip


@pytest.fixture
def submitted() -> tuple[pydicom.Dataset, list[pydicom.Dataset]]:
    datasets, _ = series()
    seg = write_seg(liver_like((5, 32, 32)), datasets, algorithm_name="a", algorithm_version="1", model_sha256=SHA)
    return reread(seg), datasets


def test_read_refuses_other_frame_of_reference(submitted: tuple[pydicom.Dataset, list[pydicom.Dataset]]) -> None:
    seg, datasets = submitted
    seg.FrameOfReferenceUID = "1.2.3.4"
    with pytest.raises(ValueError, match=r"SEG FrameOfReferenceUID '1.2.3.4' differs from the series'"):
        read_seg_mask(seg, datasets)


def test_read_refuses_other_rows_columns(submitted: tuple[pydicom.Dataset, list[pydicom.Dataset]]) -> None:
    seg, _ = submitted
    other, _ = series(rows=48, cols=32)
    for ds in other:
        ds.FrameOfReferenceUID = seg.FrameOfReferenceUID
    with pytest.raises(ValueError, match=r"SEG grid is 32 x 32 \(Rows x Columns\) but the series is 48 x 32"):
        read_seg_mask(seg, other)


def test_read_refuses_instances_outside_the_series(
    submitted: tuple[pydicom.Dataset, list[pydicom.Dataset]],
) -> None:
    seg, datasets = submitted
    with pytest.raises(ValueError, match=r"SEG references 2 instance\(s\) not in the series"):
        read_seg_mask(seg, datasets[:2])  # frames reference slices 1, 2, 3: 2 and 3 are missing


def test_nifti_round_trip_and_affine(tmp_path: Path) -> None:
    _, geometry = series()
    mask = liver_like((5, 32, 32))
    write_nifti(mask, geometry, tmp_path / "liver.nii.gz")
    image = nib.nifti1.load(str(tmp_path / "liver.nii.gz"))
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")  # DICOM rows/columns along +x, +y in LPS
    assert image.affine[0, 0] == pytest.approx(-0.8) and image.affine[2, 2] == pytest.approx(2.5)
    assert np.array_equal(read_nifti_mask(tmp_path / "liver.nii.gz", geometry), mask)


def test_nifti_on_wrong_grid_is_refused(tmp_path: Path) -> None:
    _, geometry = series()
    path = tmp_path / "m.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 4), np.uint8), geometry_affine(geometry)), str(path))
    with pytest.raises(ValueError, match=r"grid \(32, 32, 4\) \(X, Y, Z\) differs from the series' \(32, 32, 5\)"):
        read_nifti_mask(path, geometry)
    shifted = geometry_affine(geometry)
    shifted[:3, 3] += [5.0, 0.0, 0.0]
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 5), np.uint8), shifted), str(path))
    with pytest.raises(ValueError, match=r"grid corner 5.00 mm from the series' voxel"):
        read_nifti_mask(path, geometry)


def tiny_model() -> LiverSegmenter:
    config = SegmenterConfig(
        preprocess=PreprocessConfig(size=16, pixel_mm=2.0), channels=(4, 8), strides=(2,), head_channels=2
    )
    return LiverSegmenter(config).eval()


def test_segment_volume_returns_a_mask_on_the_series_grid() -> None:
    datasets, geometry = series(n=6, rows=40, cols=36)
    hu = np.stack([to_hu(ds) for ds in datasets])
    mask = segment_volume(tiny_model(), hu, geometry, batch_size=4)
    assert mask.shape == (6, 40, 36) and mask.dtype == np.uint8
    with pytest.raises(ValueError, match="does not match the geometry"):
        segment_volume(tiny_model(), hu[:5], geometry)


def test_checkpoint_round_trip_with_sha256(tmp_path: Path) -> None:
    model = tiny_model()
    path = tmp_path / "final.pt"
    metadata = {"kind": "liver-segmenter", "config": {"model": model.config.as_json()}, "metrics": {"x": 1}}
    save_checkpoint(path, {"model": model.state_dict()}, metadata)
    loaded, meta = load_segmenter(path)
    assert meta["metrics"] == {"x": 1} and len(meta["sha256"]) == 64
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():  # the same function (its batch norms folded into the convolutions)
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)


def test_dice() -> None:
    a = np.zeros((2, 4, 4), np.uint8)
    b = a.copy()
    a[0, :2], b[0, :1] = 1, 1
    per_slice = dice(a, b, axis=(1, 2))
    assert per_slice[0] == pytest.approx(2 * 4 / 12) and np.isnan(per_slice[1])


def test_train_segmenter_resumes(tmp_path: Path) -> None:
    """Two steps, then resume to four: checkpoints, metrics, overlay PNG, held-out Dice (synthetic NIfTI)."""
    from workers.training.segmenter_data import MaskedCase, SegmenterDataConfig
    from workers.training.segmenter_training import SegmenterTrainConfig, train_segmenter

    hu = np.full((32, 32, 6), -1000, np.int16)  # (X, Y, Z)
    hu[4:28, 4:28] = 40
    hu[6:16, 8:20] = 120
    liver = (hu == 120).astype(np.uint8)
    affine = np.diag([-1.5, -1.5, 3.0, 1.0])
    for name, array in (("ct", hu), ("liver", liver)):
        nib.save(nib.Nifti1Image(array, affine), str(tmp_path / f"{name}.nii.gz"))
    case = MaskedCase("synthetic", "ct.nii.gz", "liver.nii.gz")
    data = SegmenterDataConfig(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), train=(case,), heldout=case)
    model = tiny_model().config
    config = SegmenterTrainConfig(model=model, data=data, batch_size=2, steps=2, checkpoint_every=1, eval_every=2,
                                  log_every=1, warmup_steps=1)  # fmt: skip
    run = tmp_path / "run"
    train_segmenter(config, run)
    final = train_segmenter(replace(config, steps=4), run)
    _, meta = load_segmenter(final)
    assert meta["step"] == 4 and 0.0 <= meta["metrics"]["dice_series"] <= 1.0
    assert meta["training_liver_median_hu"] == [120.0, 120.0]  # the contrast note's range: the liver it saw
    assert (run / "config.json").exists() and len(list((run / "samples").glob("*.png"))) == 2
    steps = [line for line in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert len(steps) == 4  # resumed at step 2, not from scratch


@pytest.mark.realdata
def test_read_dcmqi_liver_seg_against_its_ct() -> None:
    folder = DATA_DIR / "ct" / "dcmqi-3slice"
    if not (folder / "liver-seg.dcm").exists():
        pytest.skip(f"dcmqi-3slice not found under {DATA_DIR} (set GATEKEEPER_DATA_DIR to ../shared/data)")
    datasets = [pydicom.dcmread(p) for p in sorted((folder / "ct-dicom").iterdir())]
    order, _ = order_and_check(datasets)
    datasets = [datasets[i] for i in order]
    mask = read_seg_mask(pydicom.dcmread(folder / "liver-seg.dcm"), datasets)
    assert mask.shape == (3, 512, 512)
    assert (mask.reshape(3, -1).sum(1) > 30_000).all()  # measured 35 220 to 36 233 voxels per slice
    seg = reread(write_seg(mask, datasets, algorithm_name="a", algorithm_version="1", model_sha256=SHA))
    assert np.array_equal(read_seg_mask(seg, datasets), mask)
