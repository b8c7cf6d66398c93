#!/usr/bin/env bash
# Install Debian's docker-compose (1.29, a Python program) if missing: tests/deploy/test_compose.py uses its
# parser (`docker-compose config`) to validate docker-compose.yml; it needs no Docker engine.
# Exit codes: 0 installed (or already there); 3 apt unavailable / not permitted; other: install failed.
set -euo pipefail
if command -v docker-compose >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-compose: apt-get not found" >&2
    exit 3
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "install-compose: not root and no password-less sudo" >&2
        exit 3
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends docker-compose; then
    # The package lists may be stale or absent on a fresh machine: refresh once and retry.
    $SUDO apt-get update -q || { echo "install-compose: apt-get update failed" >&2; exit 3; }
    $SUDO apt-get install -y -q --no-install-recommends docker-compose
fi
command -v docker-compose >/dev/null
