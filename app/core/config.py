"""The one settings object; the only reader of the environment.

Every variable is prefixed ``GATEKEEPER_`` (for example ``GATEKEEPER_DATABASE_URL``).
Defaults give the embedded mode: SQLite and a filesystem broker under ``./var``.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEKEEPER_", extra="ignore")

    # Where things live.
    database_url: str = "sqlite:///var/gatekeeper.db"
    broker_url: str = "filesystem://"
    storage_dir: Path = Path("var/storage")
    models_dir: Path = Path("var/models")  # registered model files, named by kind, version and sha256
    data_dir: Path = Path("../shared/data")
    ohif_dir: Path = Path("var/ohif")  # the OHIF viewer's dist/ (scripts/install-ohif.sh), served at /viewer/

    # Ingest limits: a body over max_body_bytes gets 413 before it is buffered.
    max_body_bytes: int = 2 * 1024**3
    max_instance_bytes: int = 256 * 1024**2
    max_part_header_bytes: int = 16 * 1024
    max_parts: int = 5000
    max_pixel_bytes: int = 512 * 1024**2
    max_sequence_depth: int = 16
    fsync: bool = True

    # Series completion: complete after this many seconds without a new instance.
    series_stable_age_s: float = 60.0
    dispatch_interval_s: float = 1.0
    run_dispatcher: bool = True  # the API process runs completion, outbox relay, reconciler
    reconcile_after_s: float = 30.0  # a published job not picked up by then is sent again
    # The orphan sweep: files no row references and no live upload owns, older than the minimum age.
    orphan_min_age_s: float = 600.0
    orphan_sweep_interval_s: float = 60.0

    # Celery: at-least-once delivery; the task time limit stays below the visibility timeout.
    visibility_timeout_s: int = 3600
    task_time_limit_s: int = 900
    task_soft_time_limit_s: int = 840
    max_attempts: int = 3

    # Scoring engine in the worker (workers/inference/engine.py; figures in BENCHMARKS.md):
    # "auto": CUDA with autocast when present, else bf16 autocast and channels_last where the CPU has
    # native bf16 (fp32 elsewhere), eager; "compiled": the same, torch.compile'd before a model's first
    # series (1.03-1.28x here; never overlapping inference: a background compile hung the process);
    # "eager": same as auto; "fp32": eager fp32 on the CPU, the reference that training evaluates with.
    scorer_engine: Literal["auto", "compiled", "eager", "fp32"] = "auto"
    # The segmenter's network (workers/inference/segmenter_compile.py): "auto" runs it eager (bf16 autocast
    # where native); "compiled" compiles it when a version is loaded, before its first series (about 24 s on
    # 2 cores, once per version and worker process): the network 1.3x faster here, the quality pass 5-8 %.
    segmenter_engine: Literal["auto", "compiled"] = "auto"
    # A liver cut by the field of view (in-plane, or continuing past the first or last slice): "refuse" sends the
    # series to a radiologist (liver_cut_by_fov); "accept", for a site that scans liver slabs on purpose, logs it
    # and judges the series like any other (models/input_checks.py).
    partial_liver_coverage: Literal["refuse", "accept"] = "refuse"

    # Credentials. The bootstrap token (optional) is an admin token read from the
    # environment, for first set-up and the embedded demo; tokens otherwise live
    # hashed in the database (``gatekeeper token create``).
    bootstrap_admin_token: str | None = Field(default=None, repr=False)
    public_base_url: str = ""  # base of RetrieveURL and QIDO URLs; empty: see app/core/proxy.py
    # Reverse proxies whose X-Forwarded-For/-Proto/-Host are believed (addresses or networks, comma-separated);
    # from any other peer those headers are dropped. Empty: none.
    trusted_proxies: str = ""
    # Required with the bootstrap token (ISO 8601; UTC if naive): after it the token is refused.
    bootstrap_admin_token_expires: datetime | None = None
    # Failed attempts: a client address that sends this many invalid tokens within the window gets 429.
    auth_max_failures: int = 20  # 0: no limit
    auth_failure_window_s: float = 60.0

    # Automatic promotion of a retrained model (training jobs with auto_promote): never below these
    # absolute floors on the frozen test split, whatever the current version measured (or did not).
    promote_min_test_dice: float = 0.70  # segmenter: mean Dice per slice
    promote_max_test_fpr: float = 0.10  # scorer: false-positive rate at its threshold

    # The manual queue: a claim lasts this long unless renewed.
    claim_lease_s: float = 1800.0
    # Browser sessions (/ui/login): a session ends after this long, at logout, or when its token is revoked or
    # expires. The cookie is Secure when public_base_url is https.
    ui_session_ttl_s: float = Field(default=8 * 3600.0, gt=0)
    # Optional DICOMweb destination (the PACS) for produced SEGs (auto-segmentations and accepted contours),
    # sent by STOW-RS from the results outbox (app/services/delivery.py), with a bearer token or Basic auth.
    seg_destination_url: str = ""
    seg_destination_token: str = Field(default="", repr=False)
    seg_destination_username: str = ""
    seg_destination_password: str = Field(default="", repr=False)
    # Or a DICOM AE, by C-STORE (app/services/destination_dimse.py), calling as dimse_ae_title; one or the other.
    seg_destination_dimse_host: str = ""
    seg_destination_dimse_port: int | None = Field(default=None, ge=1, le=65535)
    seg_destination_ae_title: str = ""  # the destination's (called) AE title
    # The retry schedule: attempt n (1-based) failing waits min(base * 2**(n-1), max) before the next; after
    # max_attempts the delivery is failed (an admin may send it again).
    delivery_max_attempts: int = Field(default=10, ge=1, le=100)
    delivery_backoff_s: float = Field(default=5.0, gt=0)
    delivery_backoff_max_s: float = Field(default=1800.0, gt=0)
    delivery_timeout_s: float = Field(default=60.0, gt=0)  # connect, read and write timeout of one STOW request

    # HTTP server (app/core/http_protocol.py): read timeouts against slow or stalled clients, keep-alive,
    # and the bound on a request's line and headers.
    http_header_timeout_s: float = Field(default=10.0, gt=0)  # request line and headers complete within this
    http_body_timeout_s: float = Field(default=30.0, gt=0)  # longest silence inside a body being read
    http_keep_alive_s: float = Field(default=5.0, gt=0)  # an idle keep-alive connection is closed after this
    http_max_header_bytes: int = Field(default=64 * 1024, ge=4096)  # request line and headers together

    # DICOM C-STORE receiver (app/dimse; README "DIMSE"): off unless the port is set. Only calling AE titles
    # on the allow-list, each from its hosts, may associate: "AE@host" entries, comma-separated, host an
    # address, a CIDR network or * (any host); empty refuses everyone.
    dimse_port: int | None = None
    dimse_host: str = "127.0.0.1"
    dimse_ae_title: str = "GATEKEEPER"
    dimse_allowed_peers: str = ""
    dimse_complete_on_release: bool = False  # a released association completes the series it stored into
    dimse_max_associations: int = 8  # each holds at most one instance in memory while it arrives
    dimse_timeout_s: float = 60.0  # ACSE, DIMSE and network timeouts of an association

    # Training jobs (POST /training-jobs): a job's size and how many may wait or run at once.
    training_max_steps: int = 20000  # steps (+ encoder_steps for a scorer) of one job
    training_max_active_jobs: int = 2  # queued + running

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object per line (ts, level, logger, message, ...)
    access_log: bool = True  # one line per request: method, route template, status, duration (never the path)

    @model_validator(mode="after")
    def _one_seg_destination(self) -> Settings:
        if self.seg_destination_dimse_host:
            if self.seg_destination_url:
                raise ValueError("set GATEKEEPER_SEG_DESTINATION_URL (STOW-RS) or "
                                 "GATEKEEPER_SEG_DESTINATION_DIMSE_HOST (C-STORE), not both")  # fmt: skip
            if self.seg_destination_dimse_port is None or not 1 <= len(self.seg_destination_ae_title.strip()) <= 16:
                raise ValueError("GATEKEEPER_SEG_DESTINATION_DIMSE_HOST needs GATEKEEPER_SEG_DESTINATION_DIMSE_PORT "
                                 "and GATEKEEPER_SEG_DESTINATION_AE_TITLE (1-16 characters)")  # fmt: skip
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
