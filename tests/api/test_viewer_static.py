"""/viewer/ over real HTTP: the installed OHIF dist rebased to /viewer/, its config on the service's own
DICOMweb, the SPA fallback for the study route, no escape from the dist, and a 503 that says how to install."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, Stack

pytestmark = pytest.mark.integration
DIST = ROOT / "var" / "ohif" / "dist"


@pytest.fixture(scope="module")
def served(stack: Stack) -> httpx.Client:
    """The shared stack serves ROOT/var/ohif (the default GATEKEEPER_OHIF_DIR, relative to its working folder)."""
    if not (DIST / "index.html").exists():
        pytest.skip(f"the OHIF dist is not installed in {DIST} (bash scripts/install-ohif.sh)")
    with stack.client(None) as c:
        yield c


def test_index_and_every_asset_it_names_are_served_under_viewer(served: httpx.Client) -> None:
    index = served.get("/viewer/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert 'window.PUBLIC_URL="/viewer/"' in index.text and "init-service-worker" not in index.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', index.text)
    assert assets and all(a.startswith("/viewer/") for a in assets), [a for a in assets if not a.startswith("/viewer/")]
    for asset in {a for a in assets if a.endswith((".js", ".css", ".json"))}:
        assert served.get(asset).status_code == 200, asset
    bundle = next(a for a in assets if "app.bundle" in a and a.endswith(".js"))
    r = served.get(bundle)
    assert '__webpack_require__.p = "/viewer/"' in r.text and "immutable" in r.headers["cache-control"]
    assert served.get("/viewer", follow_redirects=False).headers["location"] == "/viewer/"


def test_the_config_is_ours_and_names_no_host(served: httpx.Client) -> None:
    config = served.get("/viewer/app-config.js")
    assert config.status_code == 200 and "javascript" in config.headers["content-type"]
    assert config.text == (ROOT / "app" / "static" / "ohif" / "app-config.js").read_text()
    assert "window.location.origin + '/dicomweb'" in config.text and "imageRendering: 'wadors'" in config.text
    assert "@ohif/extension-default.dataSourcesModule.dicomweb" in config.text
    assert not re.search(r"https?://", config.text), "the viewer's config names a host"


def test_study_route_falls_back_to_the_app_and_missing_files_are_404(served: httpx.Client) -> None:
    index = served.get("/viewer/").text
    study = served.get("/viewer/viewer", params={"StudyInstanceUIDs": "1.2.3"})
    assert study.status_code == 200 and study.text == index
    assert served.get("/viewer/segmentation").text == index
    assert served.get("/viewer/nope.bundle.js").status_code == 404
    for escape in ("/viewer/..%2F..%2Fpyproject.toml", "/viewer/%2e%2e/%2e%2e/README.md"):
        r = served.get(escape)
        assert r.status_code in (404, 200) and "[project]" not in r.text and "# gatekeeper" not in r.text, escape


def test_without_the_dist_the_viewer_says_how_to_install_it(stack_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bare = stack_factory(worker=False, GATEKEEPER_OHIF_DIR=str(tmp_path / "absent"))
    with bare.client(None) as c:
        for path in ("/viewer/", "/viewer/viewer?StudyInstanceUIDs=1.2.3", "/viewer/app-config.js"):
            r = c.get(path)
            assert r.status_code == 503, path
            assert "bash scripts/install-ohif.sh" in r.json()["detail"], r.text
        assert c.get("/healthz").status_code == 200  # the rest of the service is unaffected
