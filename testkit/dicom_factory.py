"""Small synthetic CT series for tests: valid geometry, fresh UIDs, no real patient."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


@dataclass
class SeriesSpec:
    n: int = 4
    rows: int = 32
    cols: int = 32
    spacing_z: float = 2.5
    study_uid: str = ""
    series_uid: str = ""
    patient_name: str = "Test^Synthetic"
    patient_id: str = "SYN-0001"
    study_date: str = "20260101"
    accession: str = "ACC0001"
    modality: str = "CT"


def ct_like_pixels(rows: int, cols: int, index: int) -> np.ndarray:
    """Stored values (HU + 1024, int16) of a CT-like slice: air around a fat rim around soft tissue whose texture
    changes with the slice index. The gate refuses a volume without CT's air, fat and soft-tissue populations
    (models/input_checks.py: not_ct_hu); a series that should be scored must have them."""
    yy, xx = np.mgrid[:rows, :cols]
    r = ((yy - rows / 2) / (rows * 0.42)) ** 2 + ((xx - cols / 2) / (cols * 0.45)) ** 2
    hu = np.full((rows, cols), -1000, dtype=np.int16)
    hu[r < 1] = -100
    core = r < 0.6
    hu[core] = (40 + (yy + xx + index) % 40)[core]
    return (hu + 1024).astype(np.int16)


def ct_dataset(spec: SeriesSpec, index: int, sop_uid: str | None = None) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = spec.study_uid, spec.series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[spec.series_uid, "for"])
    ds.Modality, ds.PatientName, ds.PatientID = spec.modality, spec.patient_name, spec.patient_id
    ds.StudyDate, ds.AccessionNumber, ds.StudyTime = spec.study_date, spec.accession, "120000"
    ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0.0, 0.0, -index * spec.spacing_z]  # deliberately descending
    ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], spec.spacing_z
    ds.Rows, ds.Columns = spec.rows, spec.cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = ct_like_pixels(spec.rows, spec.cols, index).tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def make_series(n: int = 4, **kw: object) -> tuple[SeriesSpec, list[bytes]]:
    spec = SeriesSpec(n=n, **kw)  # type: ignore[arg-type]
    spec.study_uid = spec.study_uid or generate_uid()
    spec.series_uid = spec.series_uid or generate_uid()
    return spec, [to_bytes(ct_dataset(spec, i)) for i in range(n)]


def uid_of(blob: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True).SOPInstanceUID)
