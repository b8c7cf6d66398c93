"""scripts/rebase_ohif.py on a miniature of the OHIF dist: every root path moves under the base, and a dist
it does not recognise fails the install instead of being served half-rebased."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from tests.conftest import ROOT

rebase = runpy.run_path(str(ROOT / "scripts" / "rebase_ohif.py"))["rebase"]


def _dist(root: Path, runtime: str = '__webpack_require__.p = "/";') -> Path:
    dist = root / "dist"
    dist.mkdir()
    (dist / "index.html").write_text(
        '<link rel="manifest" href="/manifest.json"><script>window.PUBLIC_URL="/"</script>'
        '<script rel="preload" as="script" type="module" src="/init-service-worker.js"></script>'
        '<script defer src="/app.bundle.1.js"></script><link href="/app.bundle.css" rel="stylesheet">'
    )
    (dist / "app.bundle.1.js").write_text(f"(() => {{\n{runtime}\n}})();")
    (dist / "app.bundle.css").write_text("@font-face{src:url(/a.woff2)}")
    (dist / "manifest.json").write_text('{"icons": [{"src": "/assets/x.png"}]}')
    (dist / "init-service-worker.js").write_text("importScripts('https://cdn.example/x.js')")
    return dist


def test_every_root_path_moves_under_the_base(tmp_path: Path) -> None:
    dist = _dist(tmp_path)
    rebase(dist, "/viewer/")
    index = (dist / "index.html").read_text()
    assert 'href="/viewer/manifest.json"' in index and 'src="/viewer/app.bundle.1.js"' in index
    assert 'window.PUBLIC_URL="/viewer/"' in index and "init-service-worker" not in index
    assert '__webpack_require__.p = "/viewer/";' in (dist / "app.bundle.1.js").read_text()
    assert (dist / "app.bundle.css").read_text() == "@font-face{src:url(/viewer/a.woff2)}"
    assert '"/viewer/assets/x.png"' in (dist / "manifest.json").read_text()
    assert not (dist / "init-service-worker.js").exists()  # its worker branch loads Workbox from a CDN


def test_an_unknown_build_fails_loudly(tmp_path: Path) -> None:
    dist = _dist(tmp_path, runtime='__webpack_require__.p = "/static/";')
    with pytest.raises(SystemExit, match="no webpack runtime"):
        rebase(dist, "/viewer/")
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(SystemExit, match="start and end"):
        rebase(_dist(other), "viewer")
