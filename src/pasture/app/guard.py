"""Who may use the app: the user's own browser tab, and nothing else on the machine or the web.

Binding 127.0.0.1 keeps other machines out, but not other web pages the user has open: a page on any
site can make the browser send requests to 127.0.0.1 (a multipart POST is a CORS "simple" request, sent
without a preflight), and DNS rebinding lets it read the answers too. Jupyter's answer, kept here as one
pure ASGI middleware in front of every path (MLflow CVE-2023-43472 and Gradio CVE-2024-1727 are this class
of bug):

- Host allowlist: a request whose Host is not 127.0.0.1, localhost, [::1] (any port) or a name the user
  gave with --host/--allow-host gets 403. A rebinding page's requests carry its own name as Host.
- Launch token: `pasture app` makes a random token per launch and prints the URL with it in the fragment
  (`/#token=...`), which a browser never sends to any server. The page (`/`, code and no data, like the
  static assets) keeps it for its tab and sends it as the header X-Pasture-Token on every request;
  figures, heatmaps and downloads are fetched with the header and shown from blob: URLs. Every other
  path needs that header: no cookie (cookies ignore ports, so a cookie reached every other server on
  127.0.0.1, which could then replay it: issue 40) and no query parameter (it lands in logs and history).
  Without it: 401.
- No cross-site writes: a request that changes anything (every method but GET and HEAD) with an Origin
  other than this app's, or Sec-Fetch-Site other than same-origin/none, gets 403 even with the token.
- Headers on every answer: a Content-Security-Policy with no inline script (so a mistake in the page
  that builds markup from data cannot run script), no framing, no sniffing, no Referer.
"""

from __future__ import annotations

import json
import secrets

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TOKEN_PARAMETER = "token"
TOKEN_HEADER = "x-pasture-token"
READ_METHODS = {"GET", "HEAD"}
OPEN_PATHS = ("/static/",)  # the page's script and style: code, no data; served to an allowed Host without a token
OPEN_PAGES = {"/", "/favicon.ico"}  # the page itself (code, no data): it reads the token from its own address
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
        if self.token is None or path.startswith(OPEN_PATHS) or path in OPEN_PAGES:
            return None
        given = headers.get(TOKEN_HEADER)
        if given is not None and secrets.compare_digest(given.encode(), self.token.encode()):
            return None
        return 401, {"error": "this app needs its launch token: open the link that pasture app printed"}, []


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
    return f"http://{shown}:{port}/" + (f"#{TOKEN_PARAMETER}={token}" if token else "")
