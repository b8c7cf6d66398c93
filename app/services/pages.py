"""What the pages show, gathered by plain functions over the same services and rules as the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.db import cases, decisions, model_versions, pages
from app.db.states import CaseStatus, DecisionReason
from app.db.tables import Case, ModelVersion, SeriesDecision
from app.services import registry
from app.services.labeling import CaseNotFound

# Why a series is a radiologist's case, in words (DecisionReason -> sentence).
WHY = {
    DecisionReason.IN_DISTRIBUTION: "the series scored at or below the scorer's calibrated series threshold",
    DecisionReason.ANOMALOUS: "the anomaly score of the series is above the scorer's calibrated series threshold",
    DecisionReason.NO_SCORER: "no scorer was promoted when the series was scored",
    DecisionReason.SCORER_UNAVAILABLE: "the pinned scorer's file was missing, corrupt or failed to load",
    DecisionReason.SCORER_UNCALIBRATED: "the scorer has no calibrated series threshold",
    DecisionReason.SCORER_UNCALIBRATED_FOR_SEGMENTER: "the scorer's threshold was calibrated in another "
                                                      "segmenter's liver",
    DecisionReason.SEGMENTER_UNAVAILABLE: "the segmenter's file was missing, corrupt or failed to load",
    DecisionReason.NO_SEGMENTER: "no segmenter was pinned to segment it",
    DecisionReason.NO_LIVER_FOUND: "the segmenter found no liver for the scorer to look at",
    DecisionReason.SEGMENTATION_RISK: "the series looks typical, but the segmenter is likely to fail on slices "
                                      "of the liver's core (the fused failure risk is over its threshold)",
    DecisionReason.LIVER_BEYOND_MASK: "the series looks typical, but the segmentation stops short: tissue of the "
                                      "liver's density goes on past an end of the mask, or lies beside its last "
                                      "slices, which cover less than half of it",
    DecisionReason.FAILED: "the pipeline could not handle the series",
    DecisionReason.SLICE_GAP: "a slice is missing: the series has no regular grid",
    DecisionReason.DUPLICATE_POSITIONS: "two images lie at one position along the slice normal",
    DecisionReason.MIXED_ORIENTATION: "the series has no clear primary stack of slices",
}  # fmt: skip


def why(reason: str) -> str:
    try:
        return WHY.get(DecisionReason(reason), reason)
    except ValueError:
        return reason


@dataclass
class CasePage:
    case: Case
    series_uid: str
    study_uid: str
    series_status: str
    available: bool
    mine: bool
    position: int | None
    why: str
    decision: SeriesDecision | None
    versions: list[ModelVersion]
    top_slices: list[dict[str, Any]] = field(default_factory=list)  # index, score, position_mm
    profile_svg: str | None = None
    risk_svg: str | None = None  # the second signal: the segmentation's failure risk per slice, when scored
    risk_flagged: list[int] = field(default_factory=list)  # slices of the liver's core over the risk threshold
    detail: str | None = None  # the routing's words for a radiologist (which signal, which slices, how far over)


def case_for_reader(*, session: Session, case_id: int, reader: str) -> CasePage:
    """A case the reader may see: available, or claimed by this reader, now or before (a case they submitted
    or rejected stays readable to them); any other is 404, as on the API."""
    found = pages.case_with_uids(session, case_id)
    now = datetime.now(UTC)
    if found is None:
        raise CaseNotFound(f"case {case_id} is not in your queue")
    case, series, study_uid = found
    lapsed = case.status == CaseStatus.CLAIMED and case.lease_until is not None and case.lease_until < now
    available = case.status == CaseStatus.OPEN or lapsed
    mine = case.claimed_by == reader and not lapsed
    if not (available or mine):
        raise CaseNotFound(f"case {case_id} is not in your queue")
    decision = decisions.decision_for(session, series_id=series.id, revision=case.revision)
    ids = [] if decision is None else [decision.scorer_version_id, decision.segmenter_version_id]
    versions = [v for v in (session.get(ModelVersion, i) for i in ids if i is not None) if v is not None]
    page = CasePage(case, series.series_uid, study_uid, series.status, available, mine,
                    cases.position(session, case, now) if available else None,
                    why(case.reason), decision, versions)  # fmt: skip
    page.detail = series.last_error if series.revision == case.revision else None
    return page


def with_evidence(page: CasePage, settings: Settings) -> CasePage:
    """The top slices and the score profile from the evidence file, where the series was scored."""
    npz = evidence_path(page, settings)
    if npz is None:
        return page
    ev = np.load(npz)
    scores, positions = ev["slice_scores"].astype(float), ev["positions_mm"].astype(float)
    threshold = float(ev["threshold"]) if np.isfinite(ev["threshold"]) else None
    top = [int(i) for i in ev["top_slices"]]
    page.top_slices = [{"rank": k, "index": i, "score": float(scores[i]), "position_mm": float(positions[i])}
                       for k, i in enumerate(top)]  # fmt: skip
    page.profile_svg = profile_svg(scores, positions, threshold, top)
    if "slice_risk" in ev.files:  # the fused gate's second signal (workers.serving.route.FusedRisk)
        risk = ev["slice_risk"].astype(float)
        risk_threshold = float(ev["risk_threshold"]) if np.isfinite(ev["risk_threshold"]) else None
        page.risk_flagged = [int(i) for i in np.flatnonzero(ev["risk_flagged"])]
        worst = sorted(page.risk_flagged, key=lambda i: -risk[i])[:3]
        page.risk_svg = profile_svg(risk, positions, risk_threshold, worst, label="segmentation failure risk")
    return page


def evidence_path(page: CasePage, settings: Settings) -> Path | None:
    d = page.decision
    if d is None or not d.evidence_path:
        return None
    path = settings.storage_dir / d.evidence_path
    return path if path.is_file() else None


def profile_svg(scores: np.ndarray, positions: np.ndarray, threshold: float | None, top: list[int],
                width: int = 640, height: int = 220, label: str = "anomaly score") -> str:  # fmt: skip
    """The score along the series (x: position along the normal, mm), the threshold dashed, top slices marked."""
    pad_l, pad_r, pad_t, pad_b = 56, 12, 12, 36
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    lo_x, hi_x = float(positions.min()), float(positions.max())
    lo_y, hi_y = min(0.0, float(scores.min())), float(scores.max()) or 1.0
    if threshold is not None and lo_y - (hi_y - lo_y) <= threshold <= hi_y + (hi_y - lo_y):
        lo_y, hi_y = min(lo_y, threshold), max(hi_y, threshold)  # a threshold far off the scores is not drawn
    span_x, span_y = (hi_x - lo_x) or 1.0, (hi_y - lo_y) or 1.0

    def xy(p: float, v: float) -> tuple[float, float]:
        return pad_l + (p - lo_x) / span_x * w, pad_t + h - (v - lo_y) / span_y * h

    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(p, v) for p, v in zip(positions, scores, strict=True)))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="profile" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{label} along the series">',
             f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="#fff" stroke="#999"/>',
             f'<polyline points="{line}" fill="none" stroke="#1f5fbf" stroke-width="1.5"/>']  # fmt: skip
    if threshold is not None and lo_y <= threshold <= hi_y:
        _, ty = xy(lo_x, threshold)
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#c00" '
                     f'stroke-dasharray="5,4"><title>threshold {threshold:.4g}</title></line>')  # fmt: skip
    for rank, i in enumerate(top):
        x, y = xy(float(positions[i]), float(scores[i]))
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#e08000"><title>top {rank + 1}: slice {i}, '
                     f'score {float(scores[i]):.4g}</title></circle>')  # fmt: skip
    parts += [f'<text x="{pad_l}" y="{height - 8}" font-size="11">{lo_x:.0f} mm</text>',
              f'<text x="{pad_l + w}" y="{height - 8}" font-size="11" text-anchor="end">{hi_x:.0f} mm</text>',
              f'<text x="{pad_l + w / 2}" y="{height - 8}" font-size="11" text-anchor="middle">position along '
              'the slice normal</text>',
              f'<text x="{pad_l - 4}" y="{pad_t + 10}" font-size="11" text-anchor="end">{hi_y:.3g}</text>',
              f'<text x="{pad_l - 4}" y="{pad_t + h}" font-size="11" text-anchor="end">{lo_y:.3g}</text>',
              "</svg>"]  # fmt: skip
    return "".join(parts)


@dataclass
class KindPage:
    kind: str
    metric: str
    higher_is_better: bool
    promoted: ModelVersion | None
    versions: list[ModelVersion]
    verdicts: dict[int, str]  # candidate id -> what the automatic gate would say against the promoted version
    rollback_to: ModelVersion | None


def models_page(*, session: Session, settings: Settings) -> list[KindPage]:
    floors = {"segmenter": settings.promote_min_test_dice, "scorer": settings.promote_max_test_fpr}
    out = []
    for kind in registry.KINDS:
        versions = model_versions.list_versions(session, kind)
        current = model_versions.promoted(session, kind)
        verdicts = {v.id: registry.gate_verdict(v, current, floors)[1] for v in versions
                    if current is None or v.id != current.id}  # fmt: skip
        previous = None if current is None else model_versions.previously_promoted(session, kind, current.id)
        metric, higher = registry.GATE[kind]
        out.append(KindPage(kind, metric, higher, current, versions[::-1], verdicts, previous))
    return out


def series_page(*, session: Session, status: str | None, limit: int = 200) -> list[dict[str, Any]]:
    rows = []
    for series, decision in pages.series_page(session, status=status, limit=limit):
        rows.append({"series": series, "decision": decision, "why": None if decision is None else why(decision.reason)})
    return rows


def closed_cases(*, session: Session, reader: str, limit: int = 20) -> list[Case]:
    return pages.closed_by(session, reader=reader, limit=limit)


def slice_hu(*, session: Session, settings: Settings, series_id: int, index: int) -> np.ndarray:
    """The ``index``-th slice along the normal (the order the scorer saw, ``order_and_check``) in HU."""
    import pydicom

    from app.db import reads
    from app.dicom.volume import order_and_check, to_hu

    paths = [settings.storage_dir / p for p in reads.instance_paths(session, series_id)]
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    order, _ = order_and_check(headers)
    if not 0 <= index < len(order):
        raise CaseNotFound(f"the series has no slice {index}")
    return to_hu(pydicom.dcmread(paths[order[index]]))


def metric_svg(versions: list[ModelVersion], metric: str, width: int = 480, height: int = 140) -> str:
    """The gate metric of every version (oldest left), the promoted one filled: a bar chart."""
    values = [(v, v.metrics.get(metric)) for v in sorted(versions, key=lambda v: v.version)]
    numbers = [float(x) for _, x in values if isinstance(x, int | float)]
    top = max(numbers, default=1.0) or 1.0
    pad, base = 24, height - 20
    step = (width - 2 * pad) / max(len(values), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="metric-plot" width="{width}" height="{height}" '
             f'role="img" aria-label="{metric} by version">']  # fmt: skip
    for k, (v, x) in enumerate(values):
        left = pad + k * step + step * 0.15
        label = (
            f'<text x="{left + step * 0.35:.1f}" y="{height - 6}" font-size="10" text-anchor="middle">'
            f"v{v.version}</text>"
        )
        if not isinstance(x, int | float):
            parts.append(label + f'<text x="{left + step * 0.35:.1f}" y="{base - 4}" font-size="9" '
                         'text-anchor="middle">n/a</text>')  # fmt: skip
            continue
        h = (base - pad) * float(x) / top
        fill = "#1f5fbf" if v.status == "promoted" else "#9bb7e0"
        parts.append(f'<rect x="{left:.1f}" y="{base - h:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" fill="{fill}">'
                     f"<title>v{v.version} {metric} {float(x):.4g} ({v.status})</title></rect>{label}"
                     f'<text x="{left + step * 0.35:.1f}" y="{base - h - 3:.1f}" font-size="9" '
                     f'text-anchor="middle">{float(x):.3g}</text>')  # fmt: skip
    return "".join([*parts, "</svg>"])


def number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value)
    return f"{value:.4g}"
