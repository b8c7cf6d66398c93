#!/usr/bin/env bash
# Install Debian's chromium for the pages' browser tests (playwright drives /usr/bin/chromium; it never
# downloads a browser of its own). Idempotent. Exit codes: 0 installed (or already there); 3 apt unavailable
# or not permitted; other: the install failed. Without it the browser tests skip and say why.
set -euo pipefail
if command -v chromium >/dev/null || [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-chromium: apt-get not found" >&2
    exit 3
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "install-chromium: not root and no password-less sudo" >&2
        exit 3
    fi
fi
$SUDO apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null
