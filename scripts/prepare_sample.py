"""Make the TotalSegmentator sample pushable: its fixtures carry empty UIDs.

The source files have empty SOPClassUID, SOPInstanceUID, StudyInstanceUID and
SeriesInstanceUID (the file meta keeps the SOP ones). A PACS refuses such
instances, and so does this service. This script copies the SOP UIDs from the
file meta and derives the study and series UIDs deterministically from the
FrameOfReferenceUID, changing nothing else (pixel data untouched).

    python scripts/prepare_sample.py ../shared/data/ct/totalseg-example/ct-dicom samples/totalseg-example/ct-dicom
"""

from __future__ import annotations

import sys
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid


def fix(src: Path, dst: Path) -> None:
    ds = pydicom.dcmread(src)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    frame = str(ds.FrameOfReferenceUID)
    ds.StudyInstanceUID = ds.StudyInstanceUID or generate_uid(entropy_srcs=[frame, "study"])
    ds.SeriesInstanceUID = ds.SeriesInstanceUID or generate_uid(entropy_srcs=[frame, "series"])
    ds.save_as(dst, enforce_file_format=True)


def main(src_dir: str, dst_dir: str) -> None:
    out = Path(dst_dir)
    out.mkdir(parents=True, exist_ok=True)
    for src in sorted(Path(src_dir).iterdir()):
        fix(src, out / src.name)


if __name__ == "__main__":
    main(*sys.argv[1:3])
