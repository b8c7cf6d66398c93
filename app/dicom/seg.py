"""Liver masks in and out: DICOM SEG (highdicom) and NIfTI, checked against the series' geometry.

Conventions: a mask is (Z, Y, X) uint8 on the series' own grid, Z in the order
of ``load_series_volume`` (ascending along the slice normal), so that mask[k]
belongs to source_datasets[k]. NIfTI is RAS+ by definition while DICOM
patient coordinates are LPS: the affine negates the first two rows.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, cast

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from nibabel.arrayproxy import ArrayProxy
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from app.dicom.volume import SeriesGeometry

LIVER_LABEL = "Liver"
# SNOMED CT "Liver" and its legacy SNOMED RT code, as written by older tools (dcmqi)
LIVER_CODES = {("SCT", "10200004"), ("SRT", "T-62000")}
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
MAX_NIFTI_OFFSET = 1024**2  # header and extensions: a larger offset is not a mask file
SLAB_BYTES = 16 * 1024**2  # a NIfTI mask is read this many (float64) bytes at a time
MAX_SEGMENTS = 256  # more than any atlas SEG (TotalSegmentator writes 117)
# Type 2 patient / study attributes highdicom copies from the first source image; PACS may leave them out
TYPE2_FROM_SOURCE = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                     "StudyDate", "StudyTime")  # fmt: skip


def _copy(ds: pydicom.Dataset) -> pydicom.Dataset:
    """A copy with its own element dictionary (``copy.copy`` shares it), so edits leave ``ds`` untouched."""
    out = pydicom.Dataset()
    out.update(ds)
    if hasattr(ds, "file_meta"):
        out.file_meta = ds.file_meta
    return out


def _meta_uid(ds: pydicom.Dataset, keyword: str, meta_keyword: str) -> str:
    """``keyword`` of the data set, or the file meta's ``meta_keyword`` when it is empty (anonymised data)."""
    return str(ds.get(keyword, "") or "") or str(getattr(getattr(ds, "file_meta", None), meta_keyword, "") or "")


def instance_uid(ds: pydicom.Dataset) -> str:
    return _meta_uid(ds, "SOPInstanceUID", "MediaStorageSOPInstanceUID")


def _prepared_sources(source_datasets: Sequence[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """Sources as highdicom needs them: absent Type 2 patient / study attributes of the first image present
    and empty, empty SOP Class / Instance UIDs taken from the file meta (seen in anonymised data, e.g.
    totalseg-example); inputs untouched."""
    out = []
    for i, ds in enumerate(source_datasets):
        missing = [k for k in TYPE2_FROM_SOURCE if k not in ds] if i == 0 else []
        uids = {
            "SOPClassUID": _meta_uid(ds, "SOPClassUID", "MediaStorageSOPClassUID"),
            "SOPInstanceUID": instance_uid(ds),
        }
        empty = [k for k in uids if not str(ds.get(k, "") or "")]
        if not missing and not empty:
            out.append(ds)
            continue
        fixed = _copy(ds)
        for keyword in missing:
            setattr(fixed, keyword, None)
        for keyword in empty:
            if not uids[keyword]:
                raise ValueError(f"source image index {i} has no {keyword}, in the data set or its file meta")
            del fixed[keyword]  # the element object is shared with ``ds``: replace it, do not edit it
            setattr(fixed, keyword, uids[keyword])
        out.append(fixed)
    if len({instance_uid(ds) for ds in out}) != len(out):
        raise ValueError("source images must have distinct SOPInstanceUIDs")
    return out


def write_seg(
    mask: np.ndarray,
    source_datasets: Sequence[pydicom.Dataset],
    *,
    algorithm_name: str,
    algorithm_version: str,
    model_sha256: str,
    series_number: int = 900,
    omit_empty_frames: bool = True,
    manual: bool = False,
) -> pydicom.Dataset:
    """A binary DICOM SEG, one segment 'Liver' (SCT 10200004), over ``source_datasets`` (mask's Z order).

    Category SCT 91723000 Anatomical Structure (CID 7150); the model's sha256 goes into AlgorithmParameters.
    ``manual``: a radiologist's contour (SegmentAlgorithmType MANUAL, no algorithm identification).
    """
    if mask.ndim != 3 or mask.shape[0] != len(source_datasets):
        raise ValueError(f"mask must be (Z, Y, X) with Z == {len(source_datasets)} source images, got {mask.shape}")
    rows, cols = int(source_datasets[0].Rows), int(source_datasets[0].Columns)
    without_for = [i for i, ds in enumerate(source_datasets) if not str(ds.get("FrameOfReferenceUID", "") or "")]
    if without_for:
        raise ValueError(
            f"{len(without_for)} source image(s) have no FrameOfReferenceUID (e.g. index {without_for[0]}); "
            "the Segmentation IOD requires one to reference the series"
        )
    if mask.shape[1:] != (rows, cols):
        raise ValueError(f"mask slices are {mask.shape[1:]} but the source images are {(rows, cols)} (Rows, Columns)")
    algorithm = None if manual else hd.AlgorithmIdentificationSequence(
        name=algorithm_name,
        version=algorithm_version,
        family=codes.cid7162.ArtificialIntelligence,
        parameters={"model_sha256": model_sha256},
    )  # fmt: skip
    kind = hd.seg.SegmentAlgorithmTypeValues.MANUAL if manual else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=LIVER_LABEL,
        segmented_property_category=codes.cid7150.AnatomicalStructure,  # CID 7150 category of organs
        segmented_property_type=codes.SCT.Liver,
        algorithm_type=kind,
        algorithm_identification=algorithm,
    )
    # an empty SpecificCharacterSet (default repertoire) is refused by highdicom; UTF-8 is a superset
    charset = source_datasets[0].get("SpecificCharacterSet") or "ISO_IR 192"
    seg = hd.seg.Segmentation(
        source_images=_prepared_sources(source_datasets),
        pixel_array=(mask > 0).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="gatekeeper",
        manufacturer_model_name=algorithm_name,
        software_versions=algorithm_version,
        device_serial_number=model_sha256[:16] or "unknown",
        series_description="radiologist liver contour" if manual else f"{algorithm_name} liver",
        omit_empty_frames=omit_empty_frames,
        specific_character_set=charset,
    )
    return cast(pydicom.Dataset, seg)


def _liver_segment_numbers(seg: pydicom.Dataset) -> list[int]:
    found, described = [], []
    for item in seg.SegmentSequence:
        code = item.SegmentedPropertyTypeCodeSequence[0]
        key = (str(code.CodingSchemeDesignator), str(code.CodeValue))
        described.append(f"{int(item.SegmentNumber)} {item.SegmentLabel!r} {key[0]} {key[1]}")
        if key in LIVER_CODES or str(item.SegmentLabel).strip().lower() == "liver":
            found.append(int(item.SegmentNumber))
    if not found:
        raise ValueError(f"SEG has no liver segment (SCT 10200004 or label 'Liver'); segments: {described}")
    return found


def check_seg_against_series(seg: pydicom.Dataset, source_datasets: Sequence[pydicom.Dataset]) -> None:
    """Raise ValueError with a precise message when the SEG does not lie on the series' grid."""
    if str(seg.get("Modality", "")) != "SEG":
        raise ValueError(f"not a DICOM SEG: Modality is {seg.get('Modality')!r}")
    series_for = {str(ds.FrameOfReferenceUID) for ds in source_datasets if "FrameOfReferenceUID" in ds}
    seg_for = str(seg.get("FrameOfReferenceUID", ""))
    if seg_for not in series_for:
        raise ValueError(f"SEG FrameOfReferenceUID {seg_for!r} differs from the series' {sorted(series_for)}")
    rows, cols = int(source_datasets[0].Rows), int(source_datasets[0].Columns)
    if (int(seg.Rows), int(seg.Columns)) != (rows, cols):
        raise ValueError(
            f"SEG grid is {int(seg.Rows)} x {int(seg.Columns)} (Rows x Columns) but the series is {rows} x {cols}"
        )
    known = {instance_uid(ds) for ds in source_datasets}
    referenced = {
        str(src.ReferencedSOPInstanceUID)
        for frame in seg.PerFrameFunctionalGroupsSequence
        for derivation in frame.get("DerivationImageSequence", [])
        for src in derivation.get("SourceImageSequence", [])
    }
    if not referenced:
        raise ValueError("SEG frames reference no source instance (DerivationImageSequence is empty)")
    missing = sorted(referenced - known)
    if missing:
        raise ValueError(
            f"SEG references {len(missing)} instance(s) not in the series, e.g. {missing[0]} "
            f"({len(referenced)} referenced, {len(known)} in the series)"
        )
    segments = len(seg.get("SegmentSequence", []) or [])
    if not 1 <= segments <= MAX_SEGMENTS:
        raise ValueError(f"SEG has {segments} segments; 1 to {MAX_SEGMENTS} are accepted")
    frames, most = int(seg.get("NumberOfFrames", 0) or 0), len(source_datasets) * segments
    if not 1 <= frames <= most:  # checked before a frame is decoded: the frames' size follows from it
        raise ValueError(f"SEG declares {frames} frames; 1 to {most} fit (one per source image and segment)")


def read_seg_mask(seg_dataset: pydicom.Dataset, source_datasets: Sequence[pydicom.Dataset]) -> np.ndarray:
    """The liver of a submitted SEG as (Z, Y, X) uint8 in the order of ``source_datasets``; validated first.

    A SEG whose frames carry no FrameContentSequence (OHIF 3.13's label maps: its frames are placed by their
    source image only) is read frame by frame from the source each frame derives from; highdicom reads the rest.
    """
    check_seg_against_series(seg_dataset, source_datasets)
    segment_numbers = _liver_segment_numbers(seg_dataset)
    if not all("FrameContentSequence" in f for f in seg_dataset.PerFrameFunctionalGroupsSequence):
        return _mask_by_source_frames(seg_dataset, source_datasets, segment_numbers)
    seg = hd.seg.Segmentation.from_dataset(seg_dataset, copy=True)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[instance_uid(ds) for ds in source_datasets],
        segment_numbers=segment_numbers,
        ignore_spatial_locations=True,  # checked above: same frame of reference, grid and instances
        assert_missing_frames_are_empty=True,  # slices without a frame carry no liver
    )  # (Z, Y, X, n_segments)
    return (pixels.max(axis=-1) > 0).astype(np.uint8)


def _frame_segment(frame: pydicom.Dataset, shared: pydicom.Dataset | None) -> int | None:
    for group in (frame, shared):
        if group is not None and "SegmentIdentificationSequence" in group:
            return int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
    return None


def _mask_by_source_frames(
    seg: pydicom.Dataset, source_datasets: Sequence[pydicom.Dataset], segment_numbers: list[int]
) -> np.ndarray:
    """Each frame onto the slice of the one source image it derives from: a label map's pixels are segment
    numbers, a binary frame belongs to the segment its SegmentIdentificationSequence names."""
    index = {instance_uid(ds): k for k, ds in enumerate(source_datasets)}
    rows, cols = int(seg.Rows), int(seg.Columns)
    pixels = seg.pixel_array.reshape(-1, rows, cols)  # (frames, Y, X)
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    label_map = str(seg.get("SegmentationType", "")) == "LABELMAP"
    mask = np.zeros((len(source_datasets), rows, cols), np.uint8)
    for i, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        refs = {str(src.ReferencedSOPInstanceUID) for derivation in frame.get("DerivationImageSequence", [])
                for src in derivation.get("SourceImageSequence", [])}  # fmt: skip
        if len(refs) != 1:
            raise ValueError(f"SEG frame {i + 1} derives from {len(refs)} source images; one is needed to place it")
        if label_map:
            hit = np.isin(pixels[i], segment_numbers)
        elif _frame_segment(frame, shared) in segment_numbers:
            hit = pixels[i] > 0
        else:
            continue
        mask[index[refs.pop()]] |= hit.astype(np.uint8)
    return mask


def geometry_affine(geometry: SeriesGeometry) -> np.ndarray:
    """4 x 4 RAS affine of the voxel grid (i = column, j = row, k = slice index along the normal)."""
    orientation = np.asarray(geometry.orientation, dtype=float)
    row_dir, col_dir = orientation[:3], orientation[3:]  # along a row (columns grow), along a column
    normal = np.cross(row_dir, col_dir)
    positions = geometry.slice_positions_mm
    step = (positions[-1] - positions[0]) / (len(positions) - 1) if len(positions) > 1 else geometry.slice_spacing_mm
    lps = np.eye(4)
    lps[:3, 0] = row_dir * geometry.pixel_spacing_mm[1]
    lps[:3, 1] = col_dir * geometry.pixel_spacing_mm[0]
    lps[:3, 2] = normal * step
    lps[:3, 3] = geometry.origin_mm
    return LPS_TO_RAS @ lps


def write_nifti(mask: np.ndarray, geometry: SeriesGeometry, path: Path, allow_gaps: bool = False) -> None:
    """Save a (Z, Y, X) mask as NIfTI (X, Y, Z) with the series' RAS affine; refuses series with gaps.

    ``allow_gaps``: a radiologist's contour of a series with a missing slice is stored all the same, one
    NIfTI slice per stored slice (the affine's slice step is their mean; the true positions are the series'
    recorded geometry, which is what reads it back)."""
    expected = (geometry.n_slices, geometry.rows, geometry.columns)
    if mask.shape != expected:
        raise ValueError(f"mask shape {mask.shape} does not match the series grid (Z, Y, X) = {expected}")
    if geometry.gaps and not allow_gaps:
        raise ValueError(f"series has gaps after slices {geometry.gaps}: no regular NIfTI grid")
    image = nib.Nifti1Image(np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8), geometry_affine(geometry))
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    nib.save(image, str(path))


def _open_maybe_gzip(path: Path) -> BinaryIO:
    """The file, inflated as it is read when it is gzip (by its magic, not its name: uploads have none)."""
    with path.open("rb") as fp:
        magic = fp.read(2)
    return cast(BinaryIO, gzip.open(path, "rb")) if magic == b"\x1f\x8b" else path.open("rb")


def _nifti_header(fp: BinaryIO, name: str) -> nib.Nifti1Header:
    """The header alone (no extensions, no data), NIfTI-1 or NIfTI-2 in either byte order, its data in the
    same file, with a bounded data offset and a real-valued voxel type of at most 8 bytes."""
    raw = fp.read(540)
    header = None
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        size = klass.template_dtype.itemsize  # sizeof_hdr: 348 or 540
        for order in "<>":
            if len(raw) >= size and int(np.frombuffer(raw[:4], f"{order}i4")[0]) == size:
                header = klass(raw[:size], endianness=order, check=False)
    if header is None:
        raise ValueError(f"{name}: not a NIfTI-1 or NIfTI-2 file (sizeof_hdr is neither 348 nor 540)")
    if bytes(header["magic"]).rstrip(b"\0") not in (b"n+1", b"n+2"):
        raise ValueError(f"{name}: NIfTI data must be in the same file (magic n+1 or n+2)")
    dtype = header.get_data_dtype()
    if dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise ValueError(f"{name}: voxel type {dtype} not supported for a mask")
    if not 0 <= int(header.get_data_offset()) <= MAX_NIFTI_OFFSET:
        raise ValueError(f"{name}: data offset {int(header.get_data_offset())} exceeds {MAX_NIFTI_OFFSET} bytes")
    return header


def read_nifti_mask(
    path: Path, geometry: SeriesGeometry, tolerance_voxel: float = 0.1, label: str | None = None
) -> np.ndarray:
    """A NIfTI mask on the series' grid as (Z, Y, X) uint8 (axis flips allowed); ValueError if off the grid.

    The header is checked against the grid before any voxel is read, and the data is read a slab at a
    time, so a small file declaring a huge grid is refused after inflating only its header."""
    name = label or path.name
    with _open_maybe_gzip(path) as fp:
        header = _nifti_header(fp, name)
        shape = tuple(int(n) for n in header.get_data_shape())
        if len(shape) != 3:
            raise ValueError(f"{name}: NIfTI mask must be 3D, got shape {shape}")
        affine, expected = header.get_best_affine(), geometry_affine(geometry)
        transform = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(affine), nib.orientations.io_orientation(expected)
        )
        reoriented = [0, 0, 0]
        for axis, (target, _) in enumerate(transform):
            reoriented[int(target)] = shape[axis]
        grid = (geometry.columns, geometry.rows, geometry.n_slices)
        if tuple(reoriented) != grid:
            raise ValueError(f"{name}: grid {tuple(reoriented)} (X, Y, Z) differs from the series' {grid}")
        _check_corners(affine @ nib.orientations.inv_ornt_aff(transform, shape), geometry, tolerance_voxel, name)
        proxy = ArrayProxy(fp, header)  # the header's offset, type and scaling; reads only what is sliced
        data = np.empty(shape, np.uint8)
        step = max(1, SLAB_BYTES // (shape[0] * shape[1] * 8))
        for k in range(0, shape[2], step):
            data[:, :, k : k + step] = np.asarray(proxy[:, :, k : k + step]) > 0
    return np.ascontiguousarray(nib.orientations.apply_orientation(data, transform).transpose(2, 1, 0))


def _check_corners(affine: np.ndarray, geometry: SeriesGeometry, tolerance_voxel: float, name: str) -> None:
    expected = geometry_affine(geometry)
    grid = (geometry.columns, geometry.rows, geometry.n_slices)
    corners = np.array([[i, j, k, 1.0] for i in (0, grid[0] - 1) for j in (0, grid[1] - 1) for k in (0, grid[2] - 1)])
    offset_mm = float(np.max(np.linalg.norm((corners @ affine.T - corners @ expected.T)[:, :3], axis=1)))
    limit_mm = tolerance_voxel * min(*geometry.pixel_spacing_mm, geometry.slice_spacing_mm)
    if offset_mm > limit_mm:
        raise ValueError(
            f"{name}: affine places a grid corner {offset_mm:.2f} mm from the series' voxel "
            f"(tolerance {limit_mm:.2f} mm): wrong grid or frame of reference"
        )
