"""Every answer of the console carries its security headers: a strict CSP with no inline
script or style and no framing, no sniffing, no referrer, no caching of pages."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests.console.conftest import HTML


def csp(answer) -> dict[str, str]:  # type: ignore[no-untyped-def]
    policy = answer.headers["content-security-policy"]
    return {d.split()[0]: d.partition(" ")[2] for d in policy.split("; ")}


def test_pages_errors_and_static_files_carry_the_headers(client: TestClient) -> None:
    for path in ("/", "/events", "/login", "/events/999", "/events?status=nope",
                 "/static/console.css", "/static/console.js", "/nowhere"):  # fmt: skip
        answer = client.get(path, headers=HTML, follow_redirects=False)
        policy = csp(answer)
        assert policy["default-src"] == "'self'", path
        assert policy["script-src"] == "'self'"
        assert policy["style-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert "unsafe-inline" not in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-frame-options"] == "DENY"
        if not path.startswith("/static/"):
            assert answer.headers["cache-control"] == "no-store", path


def test_no_page_has_inline_script_or_style(client: TestClient) -> None:
    for path in ("/", "/events", "/attention", "/login"):
        html = client.get(path).text.lower()
        assert "<script>" not in html and "<script " not in html.replace(
            '<script src="/static/console.js" defer>', ""
        )
        assert "style=" not in html and "<style" not in html
        assert "onclick" not in html and "javascript:" not in html
