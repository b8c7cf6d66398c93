"""``/viewer/``: the OHIF viewer (``@ohif/app``, installed by scripts/install-ohif.sh), same origin as the API.

The dist is rebased to /viewer/ at install time (scripts/rebase_ohif.py); its ``app-config.js`` is this
package's own (app/static/ohif), whose one data source is the service's DICOMweb. OHIF's client-side routes
(``/viewer/viewer?StudyInstanceUIDs=…``, the study list) fall back to index.html; a missing asset is a 404.
The viewer's files are the published app and carry no PHI: they are served without a token, while every
DICOMweb request the viewer makes is checked like any other (app/api/deps.py).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from app.core.config import get_settings

PREFIX = "/viewer"
APP_CONFIG = Path(str(files("app") / "static" / "ohif" / "app-config.js"))
NOT_INSTALLED = ("the OHIF viewer is not installed: run `bash scripts/install-ohif.sh` (`make install` does) "
                 "or set GATEKEEPER_OHIF_DIR to a folder holding its dist/")  # fmt: skip
# Content-hashed bundles never change under their name; index.html and the config must be read afresh.
IMMUTABLE = "public, max-age=31536000, immutable"


def _dist() -> Path:
    return get_settings().ohif_dir / "dist"


def viewer_file(dist: Path, path: str) -> Path | None:
    """The file ``path`` names inside ``dist``, or None (outside it, a folder, or absent)."""
    root = dist.resolve()
    candidate = (root / path).resolve()
    if candidate != root and root not in candidate.parents:
        return None
    return candidate if candidate.is_file() else None


def _serve(path: str) -> Response:
    dist = _dist()
    if not (dist / "index.html").is_file():
        return JSONResponse({"detail": NOT_INSTALLED}, status_code=503)
    if path == "app-config.js":
        return FileResponse(APP_CONFIG, media_type="text/javascript", headers={"Cache-Control": "no-cache"})
    found = viewer_file(dist, path) if path else None
    if found is not None:
        hashed = ".bundle." in found.name or found.suffix in (".wasm", ".woff2")
        return FileResponse(found, headers={"Cache-Control": IMMUTABLE if hashed else "no-cache"})
    if "." in path.rsplit("/", 1)[-1]:  # an asset that is not there, not one of the app's routes
        return JSONResponse({"detail": "no such viewer file"}, status_code=404)
    return FileResponse(dist / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


def mount(app: FastAPI) -> None:
    """Add /viewer/ (the app, its assets and the SPA fallback) to the app."""

    @app.get(PREFIX, include_in_schema=False)
    def viewer_root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=308)

    @app.get(PREFIX + "/{path:path}", include_in_schema=False)
    def viewer(path: str) -> Response:
        return _serve(path)
