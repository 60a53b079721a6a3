"""The status page's files: served by the poller's app at ``/`` and ``/static/``, self-contained."""

from __future__ import annotations

import re

import httpx
from pydantic import SecretStr

from batchpipe.services.poller.app import STATIC, Poller
from batchpipe.shared.settings import Settings


async def test_page_and_its_files_are_served() -> None:
    settings = Settings(openai_api_key=SecretStr("sk-test"))
    app = Poller(settings).http_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://poller") as http:
        page = await http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-cache"
        assert '<table id="batches"' in page.text and 'lang="en"' in page.text
        for name, kind in (("status.css", "text/css"), ("status.js", "javascript")):
            assert f'"static/{name}"' in page.text  # relative: works behind a path prefix
            served = await http.get(f"/static/{name}")
            assert served.status_code == 200 and kind in served.headers["content-type"]
        assert (await http.get("/static/nope.js")).status_code == 404


def test_files_load_nothing_from_elsewhere() -> None:
    names = sorted(p.name for p in STATIC.iterdir())
    assert names == ["index.html", "status.css", "status.js"]
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path
        assert "@import" not in text and "innerHTML" not in text, path
