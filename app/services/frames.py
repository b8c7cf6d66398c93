"""WADO-RS pixel data for a viewer (PS3.18 10.4): frames, bulk data and rendered frames of a stored instance.

Frames come back in the stored transfer syntax when the client accepts it (``transfer-syntax=*``, as OHIF
asks) and decoded to Explicit VR Little Endian otherwise; ``application/octet-stream`` for native pixels.
Bulk data is addressed by a tag path (``7FE00010``, or ``00540016/0/00181072``…) that the metadata's
BulkDataURI names. A rendered frame is the modality LUT (rescale) and a linear VOI window as an 8-bit PNG
or JPEG. Messages name frames and tags, never a value.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from app.core.errors import DomainError, Invalid, NotFound

OCTET = "application/octet-stream"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
NATIVE = {"1.2.840.10008.1.2", EXPLICIT_LE}
# PS3.18 table 8.7.3-2: the media type of a compressed frame in each transfer syntax.
COMPRESSED_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg", "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls", "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2", "1.2.840.10008.1.2.5": "image/x-dicom-rle",
}  # fmt: skip
MAX_FRAMES_LISTED = 1000  # the path stays far below GATEKEEPER_HTTP_MAX_HEADER_BYTES
_FRAME_LIST = re.compile(r"^[0-9]{1,6}(,[0-9]{1,6})*$")
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
RENDERED_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG"}


class BadFrameRequest(DomainError):
    """A frame list, window or tag path this service cannot answer (400)."""


class FrameNotFound(NotFound):
    """A frame number past the instance's frames, or a bulk data path that names nothing (404)."""


class NotAcceptable(Invalid):
    """No representation the client accepts (406)."""

    status_code = 406


@dataclass(frozen=True)
class Part:
    data: bytes
    media_type: str  # with its transfer-syntax parameter


def parse_frame_list(text: str) -> list[int]:
    """``1`` or ``1,3,5`` (1-based, PS3.18 10.4.1.1.6)."""
    if not _FRAME_LIST.match(text):
        raise BadFrameRequest("frames: a comma-separated list of frame numbers (1-based) is expected")
    numbers = [int(n) for n in text.split(",")]
    if len(numbers) > MAX_FRAMES_LISTED or min(numbers) < 1:
        raise BadFrameRequest(f"frames: 1 to {MAX_FRAMES_LISTED} frame numbers, each at least 1")
    return numbers


def _frame_count(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def _check_numbers(ds: Dataset, numbers: list[int]) -> None:
    total = _frame_count(ds)
    past = [n for n in numbers if n > total]
    if past:
        raise FrameNotFound(f"frame {past[0]} does not exist: the instance has {total} frame(s)")


def _native_frames(ds: Dataset, numbers: list[int]) -> list[bytes]:
    rows, cols, spp = int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.BitsAllocated)
    data = ds.PixelData
    if bits == 1:  # frames of a binary SEG are not byte-aligned: unpack the bits, cut, pack each frame
        pixels = rows * cols * spp
        flat = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        return [np.packbits(flat[(n - 1) * pixels : n * pixels], bitorder="little").tobytes() for n in numbers]
    size = rows * cols * spp * bits // 8
    return [bytes(data[(n - 1) * size : n * size]) for n in numbers]


def _decoded_frames(ds: Dataset, numbers: list[int]) -> list[bytes]:
    array = ds.pixel_array
    if _frame_count(ds) == 1:
        array = array[None]
    return [np.ascontiguousarray(array[n - 1]).astype(array.dtype.newbyteorder("<")).tobytes() for n in numbers]


def accepts_stored_syntax(accept: str, syntax: str) -> bool:
    """Whether the Accept header takes frames in ``syntax`` as stored (``transfer-syntax=*`` or that UID)."""
    accept = accept.replace('"', "").replace(" ", "").lower()
    media = COMPRESSED_MEDIA.get(syntax, OCTET)
    return (
        "transfer-syntax=*" in accept
        or f"transfer-syntax={syntax}" in accept
        or (f"type={media}" in accept and "transfer-syntax" not in accept)
    )


def read_frames(path: Path, numbers: list[int], accept: str) -> list[Part]:
    """The frames ``numbers`` of the stored file, each as one part (stored syntax if accepted, else decoded)."""
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise FrameNotFound("the instance has no pixel data")
    _check_numbers(ds, numbers)
    syntax = str(ds.file_meta.TransferSyntaxUID)
    if syntax in NATIVE:
        return [Part(f, f"{OCTET}; transfer-syntax={EXPLICIT_LE}") for f in _native_frames(ds, numbers)]
    if accepts_stored_syntax(accept, syntax):
        frames = list(generate_frames(ds.PixelData, number_of_frames=_frame_count(ds)))
        media = f"{COMPRESSED_MEDIA.get(syntax, OCTET)}; transfer-syntax={syntax}"
        return [Part(frames[n - 1], media) for n in numbers]
    return [Part(f, f"{OCTET}; transfer-syntax={EXPLICIT_LE}") for f in _decoded_frames(ds, numbers)]


def bulk_paths(ds: Dataset) -> dict[int, str]:
    """id(element) -> its tag path (``TTTTTTTT[/index/TTTTTTTT]…``) for every element of ``ds``."""
    out: dict[int, str] = {}

    def walk(d: Dataset, prefix: str) -> None:
        for elem in d:
            path = f"{prefix}{elem.tag:08X}"
            out[id(elem)] = path
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value):
                    walk(item, f"{path}/{i}/")

    walk(ds, "")
    return out


def metadata_json(path: Path, instance_url: str, threshold: int = 4096) -> dict[str, Any]:
    """The header as DICOM JSON; large binary values and the pixel data referenced by their BulkDataURI."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    paths = bulk_paths(ds)
    out = ds.to_json_dict(bulk_data_threshold=threshold,
                          bulk_data_element_handler=lambda e: f"{instance_url}/bulkdata/{paths[id(e)]}")  # fmt: skip
    out["7FE00010"] = {"vr": "OW", "BulkDataURI": f"{instance_url}/bulkdata/7FE00010"}
    return out


def _element_at(ds: Dataset, tag_path: str) -> Any:
    steps = tag_path.strip("/").split("/")
    if len(steps) % 2 != 1 or len(steps) > 33:
        raise BadFrameRequest("bulkdata: a tag path TTTTTTTT[/item/TTTTTTTT]... is expected")
    node: Any = ds
    for i, step in enumerate(steps):
        if i % 2 == 0:
            if not _TAG.match(step):
                raise BadFrameRequest("bulkdata: each tag of the path is 8 hexadecimal digits")
            tag = int(step, 16)
            if tag not in node:
                raise FrameNotFound(f"bulkdata: no element {step.upper()} at that path")
            node = node[tag]
        else:
            if not step.isdigit() or node.VR != "SQ" or int(step) >= len(node.value):
                raise FrameNotFound(f"bulkdata: no item {step[:8]} in that sequence")
            node = node.value[int(step)]
    return node


def read_bulkdata(path: Path, tag_path: str) -> list[Part]:
    """The value of one binary element; the pixel data as its frames (one part each when encapsulated)."""
    ds = pydicom.dcmread(path)
    elem = _element_at(ds, tag_path)
    if elem.tag == 0x7FE00010 and tag_path.strip("/").upper() == "7FE00010":
        syntax = str(ds.file_meta.TransferSyntaxUID)
        if syntax not in NATIVE:
            return read_frames(path, list(range(1, _frame_count(ds) + 1)), "transfer-syntax=*")
        return [Part(bytes(ds.PixelData), f"{OCTET}; transfer-syntax={EXPLICIT_LE}")]
    if elem.VR == "SQ" or not isinstance(elem.value, bytes | bytearray):
        raise FrameNotFound(f"bulkdata: element {tag_path.split('/')[-1].upper()} holds no binary value")
    return [Part(bytes(elem.value), OCTET)]


def parse_window(text: str | None) -> tuple[float, float] | None:
    """``window=center,width[,linear]`` (PS3.18 8.3.5.1.4); only the linear function."""
    if text is None:
        return None
    bits = text.split(",")
    try:
        center, width = float(bits[0]), float(bits[1])
    except (IndexError, ValueError):
        raise BadFrameRequest("window: center,width[,linear] with numbers is expected") from None
    if len(bits) > 3 or (len(bits) == 3 and bits[2].strip().lower() != "linear") or width <= 0:
        raise BadFrameRequest("window: a positive width, and only the linear function")
    return center, width


def _first(value: Any) -> float:
    return float(value[0] if isinstance(value, pydicom.multival.MultiValue) else value)


def render_frame(path: Path, number: int, window: tuple[float, float] | None, media_type: str) -> bytes:
    """One frame, rescaled (modality LUT) and windowed (linear VOI) to 8 bits, as PNG or JPEG."""
    from PIL import Image

    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise FrameNotFound("the instance has no pixel data")
    _check_numbers(ds, [number])
    array = ds.pixel_array
    frame = array[number - 1] if _frame_count(ds) > 1 else array
    if frame.ndim == 3:  # colour: shown as stored
        image = Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8), "RGB")
    else:
        values = frame.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(
            ds.get("RescaleIntercept", 0) or 0
        )
        if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
            window = _first(ds.WindowCenter), _first(ds.WindowWidth)
        if window is None:
            low, high = float(values.min()), float(values.max())
        else:
            low, high = window[0] - window[1] / 2, window[0] + window[1] / 2
        scaled = np.clip((values - low) / max(high - low, 1e-6), 0, 1) * 255
        if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            scaled = 255 - scaled
        image = Image.fromarray(scaled.round().astype(np.uint8), "L")
    buf = io.BytesIO()
    image.save(buf, format=RENDERED_TYPES[media_type])
    return buf.getvalue()


def rendered_type(accept: str) -> str:
    """image/png unless the client asks for JPEG only; 406 for anything else."""
    accept = accept.lower()
    if "image/png" in accept or "*/*" in accept or "image/*" in accept or not accept.strip():
        return "image/png"
    if "image/jpeg" in accept:
        return "image/jpeg"
    raise NotAcceptable("rendered frames are image/png or image/jpeg")
