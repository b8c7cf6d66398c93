#!/usr/bin/env bash
# The OHIF viewer served at /viewer/ (app/api/viewer.py): the published build of @ohif/app, pinned, from the
# npm registry (`npm pack`: the package's own tarball, none of its build dependencies), checked against the
# pinned sha512, rebased from / to /viewer/ (scripts/rebase_ohif.py) and unpacked into GATEKEEPER_OHIF_DIR
# (default var/ohif). Idempotent: a second run with the same version does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=3.13.2
SHA512="WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
DEST="${GATEKEEPER_OHIF_DIR:-var/ohif}"
STAMP="$DEST/.installed"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "@ohif/app@$VERSION" ] && [ -f "$DEST/dist/index.html" ]; then
    exit 0
fi
command -v npm >/dev/null || { echo "install-ohif: npm not found (Debian: apt-get install -y npm)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "install-ohif: fetching @ohif/app@$VERSION"
(cd "$work" && npm pack --silent "@ohif/app@$VERSION" >/dev/null)
tarball="$work/ohif-app-$VERSION.tgz"
got="$(python3 -c 'import base64,hashlib,sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1],"rb").read()).digest()).decode())' "$tarball")"
if [ "$got" != "$SHA512" ]; then
    echo "install-ohif: sha512 of @ohif/app@$VERSION is $got, expected $SHA512" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$work" package/dist package/LICENSE
python3 scripts/rebase_ohif.py "$work/package/dist" /viewer/
cp "$work/package/LICENSE" "$work/package/dist/LICENSE.ohif"

# Swap in the new dist whole: a half-unpacked viewer is never served.
mkdir -p "$DEST"
rm -rf "$DEST/dist.new" "$DEST/dist.old"
mv "$work/package/dist" "$DEST/dist.new"
[ -d "$DEST/dist" ] && mv "$DEST/dist" "$DEST/dist.old"
mv "$DEST/dist.new" "$DEST/dist"
rm -rf "$DEST/dist.old"
echo "@ohif/app@$VERSION" > "$STAMP"
echo "install-ohif: @ohif/app@$VERSION in $DEST/dist"
