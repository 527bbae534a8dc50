"""Who may use the app: the user's own browser tab, and nothing else on the machine or the web.

Binding 127.0.0.1 keeps other machines out, but not other web pages the user has open: a page on any
site can make the browser send requests to 127.0.0.1 (a multipart POST is a CORS "simple" request, sent
without a preflight), and DNS rebinding lets it read the answers too. Jupyter's answer, kept here as one
pure ASGI middleware in front of every path (MLflow CVE-2023-43472 and Gradio CVE-2024-1727 are this class
of bug):

- Host allowlist: a request whose Host is not 127.0.0.1, localhost, [::1] (any port) or a name the user
  gave with --host/--allow-host gets 403. A rebinding page's requests carry its own name as Host.
- Launch token: `pasture app` makes a random token per launch and prints the URL with it. Opening
  `/?token=...` sets an HttpOnly, SameSite=Strict cookie and redirects to `/` (the token leaves the address
  bar). Every other path except the static assets (code, no data) needs the token: the cookie, the header
  X-Pasture-Token or the query parameter `token`. Without it: 401.
- No cross-site writes: a request that changes anything (every method but GET and HEAD) with an Origin
  other than this app's, or Sec-Fetch-Site other than same-origin/none, gets 403 even with the token.
  This matters because the cookie is sent by a page on another port of 127.0.0.1 (same-site: ports do
  not count for SameSite).
- Headers on every answer: a Content-Security-Policy with no inline script (so a mistake in the page
  that builds markup from data cannot run script), no framing, no sniffing, no Referer.
"""

from __future__ import annotations

import json
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TOKEN_PARAMETER = "token"
TOKEN_HEADER = "x-pasture-token"
READ_METHODS = {"GET", "HEAD"}
OPEN_PATHS = ("/static/",)  # the page's script and style: code, no data; served to an allowed Host without a token
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        b"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    # the camera for this page only (Teach records, Test labels live); no microphone, no location
    (b"permissions-policy", b"camera=(self), microphone=(), geolocation=()"),
    (b"cache-control", b"no-store"),
]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def cookie_name(port: int | None) -> str:
    """pasture_token_<port>: cookies ignore ports, so two apps on one machine (two --runs folders) would
    otherwise overwrite each other's cookie and each log the other out (Jupyter names its cookie by port too)."""
    return f"pasture_token_{port}" if port else "pasture_token"


def host_name(host_header: str | None) -> str | None:
    """The name in a Host header without its port ("[::1]:7860" -> "::1"), lower-case; None when malformed."""
    if not host_header:
        return None
    host = host_header.strip().lower()
    if host.startswith("["):  # IPv6 literal
        name, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return name
    name, colon, port = host.partition(":")
    if colon and not port.isdigit():
        return None
    return name or None


class Guard:
    """The ASGI middleware described above, in front of `app`. `token=None` (--no-token) keeps the Host and
    Origin checks and drops the token."""

    def __init__(self, app, token: str | None, hosts: set[str] | None = None):
        self.app = app
        self.token = token
        self.hosts = set(LOCAL_HOSTS) | {host.lower().strip("[]") for host in hosts or ()}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        refusal = self.refusal(scope)
        if refusal is not None:
            return await _answer(send_with_headers, *refusal)
        return await self.app(scope, receive, send_with_headers)

    def refusal(self, scope) -> tuple | None:
        """(status, body, extra headers) when the request must not reach the app, else None."""
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        host = headers.get("host")
        if host_name(host) not in self.hosts:
            return (
                403,
                {"error": f"Host {host!r} is not this app's address; open the link that pasture app printed"},
                [],
            )
        if scope["method"] not in READ_METHODS:
            site = headers.get("sec-fetch-site")
            origin = headers.get("origin")
            if site not in (None, "same-origin", "none"):
                return 403, {"error": f"a request from another site ({site}) cannot change anything here"}, []
            if origin is not None and origin != f"{scope.get('scheme', 'http')}://{host}":
                return 403, {"error": f"a request from {origin} cannot change anything here"}, []
        path = scope["path"]
        if self.token is None or path.startswith(OPEN_PATHS):
            return None
        port = (scope.get("server") or (None, None))[1]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        from_query = query.get(TOKEN_PARAMETER, [None])[0]
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no token, not a crash
            cookies = SimpleCookie()
        candidates = [
            from_query,
            headers.get(TOKEN_HEADER),
            cookies[cookie_name(port)].value if cookie_name(port) in cookies else None,
        ]
        if any(
            given is not None and secrets.compare_digest(given.encode(), self.token.encode()) for given in candidates
        ):
            if path == "/" and from_query is not None and scope["method"] in READ_METHODS:
                # Keep the token in an HttpOnly cookie and take it out of the address bar and history.
                cookie = f"{cookie_name(port)}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                return 303, None, [(b"location", b"/"), (b"set-cookie", cookie.encode())]
            return None
        if path.startswith("/api/"):
            return 401, {"error": "this app needs its launch token: open the link that pasture app printed"}, []
        return (
            401,
            (
                "<!doctype html><title>pasture</title><p>This is a pasture app. Open it with the link that "
                "<code>pasture app</code> printed in its terminal (it ends in <code>?token=...</code>).</p>"
            ),
            [],
        )


async def _answer(send, status: int, body, headers: list) -> None:
    if body is None:
        payload, kind = b"", b"text/plain; charset=utf-8"
    elif isinstance(body, str):
        payload, kind = body.encode(), b"text/html; charset=utf-8"
    else:
        payload, kind = json.dumps(body).encode(), b"application/json"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", kind), (b"content-length", str(len(payload)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def local_url(host: str, port: int, token: str | None) -> str:
    """The URL `pasture app` prints: with the token, and a host a browser can open."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + (f"?{TOKEN_PARAMETER}={token}" if token else "")
