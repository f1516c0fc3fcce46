"""Render the service's /docs in headless Chromium with every other host unreachable,
save a screenshot, and check that Swagger UI rendered every route of /openapi.json.

    apt-get install chromium                       # Debian's package
    python scripts/docs_screenshot.py --url http://127.0.0.1:8000
    python scripts/docs_screenshot.py --artifact artifacts/demo/primary/model.pt   # starts one

Exit 0 when every path of the schema is rendered, 1 naming the missing ones (or when
Chromium rendered nothing: the page's scripts did not load). Offline is enforced, not
assumed: Chromium resolves no host but the server's (``--host-resolver-rules``), so an asset
still fetched from a CDN would fail to load and the route list would stay empty.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.process import ServerProcess

# Swagger UI renders each operation's path as <span class="opblock-summary-path" data-path=...>
_RENDERED_PATH = re.compile(r'class="opblock-summary-path"[^>]*data-path="([^"]+)"')


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise SystemExit("docs_screenshot: no Chromium found (Debian: apt-get install chromium)")


def render(url: str, screenshot: Path, *, budget_ms: int = 20_000) -> str:
    """The page's DOM after its scripts ran (virtual time: no wall-clock wait), and a
    full-width screenshot of it."""
    common = [
        chromium(),
        "--headless",
        "--no-sandbox",  # root in a container: Chromium refuses its sandbox otherwise
        "--disable-gpu",
        # no name resolves but the server's own: nothing can come from outside
        f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {urlsplit(url).hostname}",
        f"--virtual-time-budget={budget_ms}",
        "--window-size=1280,2200",
    ]
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*common, f"--screenshot={screenshot}", url], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    dom = subprocess.run([*common, "--dump-dom", url], check=True, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    return dom.stdout


@contextlib.contextmanager
def served(url: str | None, artifact: Path | None) -> Iterator[str]:
    if url is not None:
        yield url.rstrip("/")
        return
    assert artifact is not None
    with tempfile.TemporaryDirectory() as scratch:
        server = ServerProcess(artifact, Path(scratch) / "ledger.sqlite3",
                               admin_token=secrets.token_urlsafe(32))  # fmt: skip
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="base URL of a running recsys-server")
    where.add_argument("--artifact", type=Path, help="start recsys-server on this model.pt")
    parser.add_argument("--out", type=Path, default=Path("results/docs/docs.png"),
                        help="the screenshot (PNG)")  # fmt: skip
    args = parser.parse_args(argv)
    with served(args.url, args.artifact) as base:
        paths = set(httpx.get(f"{base}/openapi.json", timeout=30).json()["paths"])
        dom = render(f"{base}/docs", args.out)
    rendered = set(_RENDERED_PATH.findall(dom))
    missing = sorted(paths - rendered)
    print(f"screenshot: {args.out}")
    print(f"routes in /openapi.json: {len(paths)}; rendered by Swagger UI: {len(rendered)}")
    if missing:
        print(f"not rendered: {', '.join(missing)}")
        return 1
    print("every route of the schema is rendered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
