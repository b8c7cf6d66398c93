"""docker-compose.yml through a real Compose parser (Debian's docker-compose 1.29: `docker-compose config`
validates the file against the Compose schema and resolves anchors and variables; no Docker engine needed),
then the deployment it describes: separate scoring and training workers, shared volumes, health checks."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from app.core.broker import SCORE_SERIES_TASK, SCORING_QUEUE, TRAIN_MODEL_TASK, TRAINING_QUEUE, make_celery
from app.core.config import Settings
from tests.conftest import ROOT
from tests.deploy.conftest import COMPOSE, WORKERS, compose_config

DOCKERFILE = ROOT / "Dockerfile"


def _mount(entry: str | dict) -> tuple[str, str, str]:
    """(source, target, rw|ro) from docker-compose's short form (what 1.29 prints) or the long form."""
    if isinstance(entry, dict):
        return entry["source"], entry["target"], "ro" if entry.get("read_only") else "rw"
    source, target, *mode = entry.split(":")
    return source, target, mode[0] if mode else "rw"


def _queues(command: list[str]) -> list[str]:
    args = shlex.split(command) if isinstance(command, str) else command
    assert args[:2] == ["gatekeeper", "worker"], args
    return args[args.index("--queues") + 1].split(",")


def test_the_parser_accepts_the_file_and_refuses_broken_ones(compose_bin: str, tmp_path: Path) -> None:
    assert compose_config(compose_bin, COMPOSE, POSTGRES_PASSWORD="x").returncode == 0
    # the parser really validates: a missing secret, an unknown key, a wrong type are each refused
    missing = compose_config(compose_bin, COMPOSE)
    assert missing.returncode != 0 and "set POSTGRES_PASSWORD" in missing.stderr
    for old, new in [("    healthcheck: *worker-health", "    helthcheck: *worker-health"),
                     ('ports: ["8042:8042"]', "ports: 8042")]:  # fmt: skip
        broken = tmp_path / "docker-compose.yml"
        broken.write_text(COMPOSE.read_text().replace(old, new, 1))
        done = compose_config(compose_bin, broken, POSTGRES_PASSWORD="x")
        assert done.returncode != 0, f"{new!r} accepted"


def test_scoring_never_waits_behind_training(config: dict) -> None:
    services = config["services"]
    # results back to the PACS are small HTTP calls: they ride with scoring, never behind a training job
    assert _queues(services["worker-scoring"]["command"]) == [SCORING_QUEUE, "delivery"]
    assert _queues(services["worker-training"]["command"]) == [TRAINING_QUEUE]
    # and the tasks are routed to those queues by name
    routes = make_celery(Settings(broker_url="redis://127.0.0.1:1/0")).conf.task_routes
    assert routes[SCORE_SERIES_TASK]["queue"] == SCORING_QUEUE and routes[TRAIN_MODEL_TASK]["queue"] == TRAINING_QUEUE
    for name in WORKERS:
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name
        assert services[name]["build"]["target"] == "worker-gpu"
        assert services[name]["depends_on"]["api"]["condition"] == "service_healthy"  # the API migrates first
    assert services["api"]["build"]["target"] == "api"


def test_every_container_shares_storage_and_models(config: dict) -> None:
    services = config["services"]
    for name in ("api", *WORKERS):
        env = services[name]["environment"]
        mounts = {target: (source, mode) for source, target, mode in map(_mount, services[name]["volumes"])}
        for setting, volume in (("GATEKEEPER_MODELS_DIR", "models"), ("GATEKEEPER_STORAGE_DIR", "storage")):
            folder = env[setting]
            assert mounts[folder] == (volume, "rw"), (name, setting, mounts)
            assert folder.startswith("/data/"), "the image's user owns /data, so named volumes there are writable"
        assert env["GATEKEEPER_BROKER_URL"].startswith("redis://") and "postgresql" in env["GATEKEEPER_DATABASE_URL"]
    assert {"models", "storage"} <= set(config["volumes"])
    assert "s3cret" in services["api"]["environment"]["GATEKEEPER_DATABASE_URL"]


def test_every_service_has_a_health_check(config: dict) -> None:
    for name, service in config["services"].items():
        assert service.get("healthcheck", {}).get("test"), name


def _stages(text: str) -> dict[str, list[str]]:
    """Dockerfile instructions per stage (continuation lines joined)."""
    stages: dict[str, list[str]] = {}
    current = None
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if m := re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE):
            current = m.group(2)
            stages[current] = [f"FROM {m.group(1)}", *(stages.get(m.group(1), []) if m.group(1) in stages else [])]
            continue
        assert current is not None, line
        stages[current].append(line)
    return stages


def test_images_run_unprivileged_with_health_checks() -> None:
    stages = _stages(DOCKERFILE.read_text())
    useradd = next(i for i in stages["base"] if "useradd" in i)
    assert re.search(r"--uid (\d+)", useradd) and int(re.search(r"--uid (\d+)", useradd).group(1)) >= 1000
    assert "chown -R gatekeeper:gatekeeper /data" in useradd
    for target in ("api", "worker-gpu"):
        users = [i for i in stages[target] if i.startswith("USER ")]
        assert users and users[-1] == "USER gatekeeper", target
        assert any(i.startswith("HEALTHCHECK ") for i in stages[target]), target
        pins = [i for i in stages[target] if "pip install" in i and "torch" in i]
        assert pins and all("torch==2.13.0" in i for i in pins), target
    # the GPU image: PyPI's torch 2.13.0 (the CUDA 13.0 build); the API image: the CPU build
    assert not any("--index-url" in i for i in stages["worker-gpu"] if "torch" in i)
    assert any("whl/cpu" in i for i in stages["api"])
    assert "gatekeeper db upgrade" in stages["api"][-1] and "--queues" in stages["worker-gpu"][-1]


def test_the_build_context_keeps_what_the_images_copy() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    copied = [src for i in _stages(DOCKERFILE.read_text())["wheel"] if i.startswith("COPY ") for src in i.split()[1:-1]]
    assert set(copied) == {"pyproject.toml", "README.md", "app", "workers", "models", "migrations"}
    assert all((ROOT / src).exists() and src not in ignored for src in copied), copied


def test_the_api_image_carries_the_viewer() -> None:
    """/viewer/ answers 503 without the OHIF build: the API image installs it with the project's own script."""
    stages = _stages(DOCKERFILE.read_text())
    assert any("scripts/install-ohif.sh" in i and "GATEKEEPER_OHIF_DIR=/opt/ohif" in i for i in stages["ohif"])
    assert "COPY --from=ohif /opt/ohif /opt/ohif" in stages["api"]
    assert "ENV GATEKEEPER_OHIF_DIR=/opt/ohif" in stages["api"]
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert "scripts" not in ignored and (ROOT / "scripts" / "rebase_ohif.py").exists()
