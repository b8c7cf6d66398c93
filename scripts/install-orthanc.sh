#!/usr/bin/env bash
# Install the test peers from the Debian packages, if missing: Orthanc, its DICOMweb plugin, and dcmtk
# (storescu, echoscu: the DIMSE tests' senders).
# Idempotent: exits at once when both are already installed. Never starts the
# Orthanc system service (the tests and benchmarks run the binary themselves).
# Exit codes: 0 installed (or already there); 3 apt unavailable / not permitted; other: install failed.
set -euo pipefail

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

if installed orthanc && installed orthanc-dicomweb && installed dcmtk && command -v Orthanc >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-orthanc: apt-get not found" >&2
    exit 3
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "install-orthanc: not root and no password-less sudo" >&2
        exit 3
    fi
fi
# policy-rc.d 101: the package's postinst must not start the daemon via invoke-rc.d.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends orthanc orthanc-dicomweb dcmtk; then
    # The package lists may be stale or absent on a fresh machine: refresh once and retry.
    $SUDO apt-get update -q || { echo "install-orthanc: apt-get update failed" >&2; exit 3; }
    $SUDO apt-get install -y -q --no-install-recommends orthanc orthanc-dicomweb dcmtk
fi
command -v Orthanc >/dev/null
