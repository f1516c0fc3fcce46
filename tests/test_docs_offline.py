"""/docs and /redoc work without internet (issue 18, service item 7): every asset they
load is served by the service itself. A real browser rendering the route list is
``scripts/docs_screenshot.py`` (headless Chromium, documented in docs/service.md,
"Running the server")."""

from __future__ import annotations

import re

import httpx
import pytest

from shared.process import ServerProcess

# src=, href=, ReDoc's spec-url= and Swagger UI's url: (the schema)
_REFERENCES = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']|url:\s*["']([^"']+)["']""")
_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "json"}


def references(page: str) -> list[str]:
    return [a or b for a, b in _REFERENCES.findall(page)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_load_only_local_assets_and_each_answers(server: ServerProcess, page: str) -> None:
    with httpx.Client(base_url=server.url) as client:
        html = client.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        urls = references(html.text)
        assert any(url.endswith(".js") for url in urls) and "/openapi.json" in urls, urls
        # no other host: not a CDN, not a font service, not a validator
        assert not re.findall(r"https?://[^\s\"']+", html.text)
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), url
            asset = client.get(url)
            assert asset.status_code == 200 and asset.content, url
            kind = next(t for suffix, t in _TYPES.items() if url.endswith(suffix))
            assert kind in asset.headers["content-type"], (url, asset.headers["content-type"])


def test_swagger_ui_is_a_version_that_renders_the_schema(server: ServerProcess) -> None:
    """FastAPI's schema is OpenAPI 3.1, which Swagger UI renders from version 5 on (4.x
    shows 'Unable to render this definition')."""
    with httpx.Client(base_url=server.url) as client:
        schema = client.get("/openapi.json").json()
        (bundle,) = [u for u in references(client.get("/docs").text) if u.endswith("bundle.js")]
        script = client.get(bundle).text
    assert schema["openapi"].startswith("3.1")
    version = re.search(r'PACKAGE_VERSION:"(\d+)\.', script)
    assert version and int(version[1]) >= 5, "Swagger UI 5 or later"
