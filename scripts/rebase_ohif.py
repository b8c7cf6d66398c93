"""Rebase OHIF's built dist/ from `/` to a sub-path (``/viewer/``), in place; stdlib only (install time).

The published `@ohif/app` dist assumes it is served from the origin's root: index.html links `/app.bundle…`,
`window.PUBLIC_URL="/"`, every webpack runtime (the app and its web workers) sets its public path to "/",
the stylesheet loads its font from `/…woff2` and the manifest's icons are under `/assets/`. Each of these is
rewritten, and the count of rewrites is checked, so a new OHIF build that moves one fails the install loudly
instead of serving a viewer that requests assets from the API's root. The service-worker loader (whose
worker branch imports Workbox from a CDN) and the Google Cloud sample config are dropped: nothing in the
served viewer names a host on the internet.

Usage: python3 scripts/rebase_ohif.py DIST /viewer/
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

WEBPACK_PUBLIC_PATH = ('__webpack_require__.p = "/";', '.p="/"')
SERVICE_WORKER_TAG = re.compile(r'<script[^>]*init-service-worker\.js"[^>]*></script>')
DROPPED = ("init-service-worker.js", "sw.js", "google.js")


def _rewrite(path: Path, pairs: list[tuple[str, str]], at_least: int) -> int:
    text = path.read_text(encoding="utf-8")
    count = 0
    for old, new in pairs:
        count += text.count(old)
        text = text.replace(old, new)
    if count < at_least:
        raise SystemExit(f"{path.name}: expected at least {at_least} root paths to rebase, found {count}")
    path.write_text(text, encoding="utf-8")
    return count


def rebase(dist: Path, base: str) -> dict[str, int]:
    if not (base.startswith("/") and base.endswith("/")):
        raise SystemExit(f"the base must start and end with '/': {base!r}")
    index = dist / "index.html"
    html = SERVICE_WORKER_TAG.sub("", index.read_text(encoding="utf-8"))
    index.write_text(html, encoding="utf-8")
    done = {
        "index.html": _rewrite(
            index,
            [
                ('href="/', f'href="{base}'),
                ('src="/', f'src="{base}'),
                ('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{base}"'),
            ],
            3,
        )
    }
    runtimes = 0
    for js in sorted(dist.glob("*.js")):
        text = js.read_text(encoding="utf-8", errors="surrogateescape")
        if any(p in text for p in WEBPACK_PUBLIC_PATH):
            text = text.replace(WEBPACK_PUBLIC_PATH[0], f'__webpack_require__.p = "{base}";')
            text = text.replace(WEBPACK_PUBLIC_PATH[1], f'.p="{base}"')
            js.write_text(text, encoding="utf-8", errors="surrogateescape")
            runtimes += 1
    if runtimes == 0:
        raise SystemExit("no webpack runtime with public path '/' found: not the OHIF dist this script knows")
    done["webpack runtimes"] = runtimes
    for css in sorted(dist.glob("*.css")):
        text = css.read_text(encoding="utf-8")
        rebased = re.sub(r"url\(/(?!/)", f"url({base}", text)
        if rebased != text:
            css.write_text(rebased, encoding="utf-8")
            done[css.name] = text.count("url(/")
    manifest = dist / "manifest.json"
    if manifest.exists():
        done["manifest.json"] = _rewrite(manifest, [('"/assets/', f'"{base}assets/')], 0)
    for name in DROPPED:
        (dist / name).unlink(missing_ok=True)
    return done


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    for what, n in rebase(Path(sys.argv[1]), sys.argv[2]).items():
        print(f"rebased {what}: {n}")
