"""How the web app is served: types, caching, CSP and the rules the CSP relies on.

No browser needed: these read the answers and the shipped files.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib import resources

import pytest

from memoryd.server.routes import web as browser_client
from tests.helpers import Api

STATIC = resources.files("memoryd.web") / "static"

SERVED = {
    "/": "text/html",
    "/memoryd-client.js": "text/javascript",
    "/memoryd-client.d.ts": "text/plain",
    "/static/app.css": "text/css",
    "/static/js/main.js": "text/javascript",
    "/static/js/app.js": "text/javascript",
    "/static/icon.svg": "image/svg+xml",
}


@pytest.mark.parametrize(("path", "content_type"), sorted(SERVED.items()))
async def test_files_are_served_with_type_csp_and_revalidation(
    api: Api, path: str, content_type: str
) -> None:
    resp = await api.get(path)
    assert resp.status == 200, resp.body
    assert resp.header("Content-Type").split(";")[0] == content_type  # type: ignore[union-attr]
    assert resp.header("Content-Security-Policy") == browser_client.CSP
    assert resp.header("X-Content-Type-Options") == "nosniff"
    assert resp.header("Cache-Control") == "no-cache"
    etag = resp.header("ETag")
    assert etag
    again = await api.get(path, headers={"If-None-Match": etag})
    assert again.status == 304
    assert again.body is None


def test_the_policy_is_strict() -> None:
    directives = dict(d.split(" ", 1) for d in browser_client.CSP.split("; "))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in browser_client.CSP


async def test_unknown_and_escaping_paths_are_404_json(api: Api) -> None:
    for path in ("/static/nope.js", "/static/../pyproject.toml", "/static/%2e%2e/app.py"):
        resp = await api.get(path)
        assert resp.status == 404, (path, resp.body)
        assert resp.error_code == "not_found"


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and not names.get("src"):
            self.problems.append("an inline <script>")
        if tag == "style":
            self.problems.append("a <style> element")
        for name, _ in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"an inline {name}= on <{tag}>")
        for name in ("src", "href"):
            value = names.get(name)
            if value and value.startswith("/static/"):
                self.refs.append(value)


def test_the_page_has_no_inline_script_or_style_and_its_files_exist() -> None:
    parser = _Markup()
    parser.feed((STATIC / "index.html").read_text())
    assert not parser.problems
    assert parser.refs
    for ref in parser.refs:
        assert (STATIC / ref.removeprefix("/static/")).is_file(), ref


def test_scripts_build_no_html_from_strings_and_set_no_inline_style() -> None:
    # Text goes in as textContent (no injection); styles are classes (the CSP).
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\.style\b|eval\("
    )
    files = [STATIC / "memoryd-client.js", *(STATIC / "js").iterdir()]
    for file in files:
        text = file.read_text()
        assert not forbidden.search(text), f"{file.name}: {forbidden.search(text)}"
    # Every module the app imports is shipped.
    for file in files:
        for module in re.findall(r'from "(\./[\w-]+\.js)"', file.read_text()):
            assert (STATIC / "js" / module.removeprefix("./")).is_file(), module
