"""The app answers only its user's page: a foreign Host, a missing or wrong launch token, a write from
another site (even carrying the token), a GET that would write, script injected through a run's name,
and an upload far over its limit are each refused, over HTTP and in a real browser."""

from __future__ import annotations

import http.client
import http.server
import shutil
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason='the app extra is not installed (pip install -e ".[app]")')

from appkit import TOKEN, app_process, chromium_browser, client_for, live, peak_rss_kib, photos, teach, wait_for

from pasture.app.guard import host_name, local_url
from pasture.app.server import create_app


@pytest.fixture
def runs(tmp_path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def app(runs):
    return create_app(runs, token=TOKEN)


def written(runs: Path) -> list[str]:
    """What the app has written into RUNS besides its (empty) heatmap folder."""
    return sorted(path.name for path in runs.iterdir() if path.name != ".explanations")


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:7860", "127.0.0.1.evil.example", "localhost.:7860", "", "127.0.0.1:x"]
)
@pytest.mark.parametrize(
    "method,path", [("GET", "/"), ("GET", "/api/runs"), ("GET", "/static/page.js"), ("POST", "/api/teach")]
)
def test_a_foreign_host_is_refused_on_every_path(app, runs, host, method, path):
    # DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends its own name as Host.
    client = client_for(app)
    response = client.request(
        method, path, headers={"Host": host}, files=photos("cow", 2) if method == "POST" else None
    )
    assert response.status_code == 403
    assert written(runs) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:7860", "localhost:7860", "LOCALHOST", "[::1]:7860", "[::1]"])
def test_the_local_names_are_allowed(app, host):
    assert client_for(app).get("/api/runs", headers={"Host": host}).status_code == 200


def test_a_host_given_with_host_or_allow_host_is_allowed(runs):
    client = client_for(create_app(runs, token=TOKEN, hosts={"my-laptop.local"}))
    assert client.get("/api/runs", headers={"Host": "my-laptop.local:7860"}).status_code == 200
    assert client.get("/api/runs", headers={"Host": "other.local:7860"}).status_code == 403


def test_host_names_are_parsed_with_their_ports():
    assert host_name("[::1]:7860") == "::1" and host_name("LocalHost:80") == "localhost"
    assert host_name("127.0.0.1") == "127.0.0.1"
    assert host_name("[::1]x") is None and host_name("a:b") is None and host_name(None) is None


def test_without_the_token_the_api_answers_401(app):
    anonymous = client_for(app, token=None)
    assert anonymous.get("/api/runs").status_code == 401
    assert anonymous.get("/api/runs", headers={"X-Pasture-Token": "wrong"}).status_code == 401
    page = anonymous.get("/")
    assert page.status_code == 200 and "/static/page.js" in page.text  # the page: code, no data
    assert anonymous.get("/static/page.js").status_code == 200
    assert anonymous.get("/api/runs", headers={"X-Pasture-Token": TOKEN}).status_code == 200  # the one way in


def test_the_token_is_accepted_only_in_its_header_never_from_a_cookie_or_the_address(app):
    """A cookie reaches every server on 127.0.0.1 (cookies ignore ports), which could replay it; a token
    in the address lands in logs and history (issue 40)."""
    anonymous = client_for(app, token=None)
    anonymous.cookies.set("pasture_token_7860", TOKEN)
    anonymous.cookies.set("pasture_token", TOKEN)
    assert anonymous.get("/api/runs").status_code == 401
    assert anonymous.delete("/api/runs/first").status_code == 401
    assert anonymous.get(f"/api/runs?token={TOKEN}").status_code == 401
    opened = anonymous.get(f"/?token={TOKEN}", follow_redirects=False)
    assert opened.status_code == 200 and "set-cookie" not in opened.headers  # an old link: no cookie set


def test_every_answer_forbids_inline_script_framing_and_others_cameras(app):
    client = client_for(app)
    for response in (client.get("/"), client.get("/api/runs"), client_for(app, token=None).get("/api/runs")):
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        # the camera for the app's own page only; never the microphone
        assert response.headers["permissions-policy"] == "camera=(self), microphone=(), geolocation=()"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:8000"},  # another port is another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_cross_site_write_is_refused_even_with_the_token(app, runs, headers):
    client = client_for(app)
    response = client.post(
        "/api/teach",
        headers=headers,
        files=photos("cow", 3) + photos("horse", 3),
        data={"classes": '["cow", "horse"]', "name": "pwned", "mode": "tiny", "epochs": "1"},
    )
    assert response.status_code == 403, response.text
    assert client.post("/api/runs/x/export", headers=headers).status_code == 403
    assert client.delete("/api/runs/x", headers=headers).status_code == 403
    assert written(runs) == []


def test_the_page_own_writes_pass_the_origin_check(app, runs):
    client = client_for(app)
    response = client.post(
        "/api/teach",
        headers={"Origin": "http://127.0.0.1:7860", "Sec-Fetch-Site": "same-origin"},
        files=photos("cow", 3) + photos("horse", 3),
        data={"classes": '["cow", "horse"]', "name": "mine", "mode": "tiny", "epochs": "1"},
    )
    assert response.status_code == 200, response.text
    assert wait_for(client, response.json()["job"])["state"] == "done"


def test_export_is_a_post_a_get_writes_nothing(app, runs):
    client = client_for(app)
    assert wait_for(client, teach(client)["job"])["state"] == "done"
    assert client.get("/api/runs/first/export").status_code == 405
    assert not (runs / "first" / "model.onnx").exists()


def test_without_a_token_the_host_and_origin_checks_stay(runs):
    client = client_for(create_app(runs, token=None), token=None)
    assert client.get("/api/runs").status_code == 200
    assert client.get("/api/runs", headers={"Host": "evil.example"}).status_code == 403
    assert client.post("/api/teach", headers={"Origin": "http://evil.example"}).status_code == 403


def test_the_printed_link_holds_the_token():
    assert local_url("127.0.0.1", 7860, "abc") == "http://127.0.0.1:7860/#token=abc"  # no server sees a fragment
    assert local_url("0.0.0.0", 80, None) == "http://127.0.0.1:80/"
    assert local_url("::1", 7860, "t") == "http://[::1]:7860/#token=t"


# ---------------------------------------------------------------------------------------- the browser

EVIL_PAGE = """<!doctype html><title>cute cats</title><body><script>
const app = "APP";
const form = new FormData();
form.append("classes", '["cow", "horse"]'); form.append("name", "pwned"); form.append("mode", "tiny");
form.append("epochs", "1");
for (const key of ["class_0", "class_0", "class_1", "class_1"]) form.append(key, new Blob(["x"], {type: "image/png"}), "a.png");
Promise.allSettled([
  fetch(app + "/api/teach", {method: "POST", body: form, mode: "no-cors", credentials: "include"}),
  fetch(app + "/api/runs/first/export", {method: "POST", mode: "no-cors", credentials: "include"}),
]).then(() => { document.title = "sent"; });
</script></body>"""


def serve_page(html: str, seen: list | None = None):
    """A second local web server (another origin: another port) serving one page; returns (url, stop).
    With `seen`, the headers of every request it receives are appended there."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if seen is not None:
                seen.append({"path": self.path, **dict(self.headers)})
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/", server.shutdown


@pytest.mark.slow
def test_a_page_from_another_origin_cannot_make_the_browser_write(runs):
    app = create_app(runs, token=TOKEN)
    client = client_for(app)
    assert wait_for(client, teach(client)["job"])["state"] == "done"  # a finished run it could try to export
    before = sorted(path.name for path in (runs / "first").iterdir())
    with live(app) as base, chromium_browser() as browser:
        evil_url, stop = serve_page(EVIL_PAGE.replace("APP", base))
        try:
            page = browser.new_page()
            page.goto(f"{base}/#token={TOKEN}")  # the user has the app open
            page.goto(evil_url)  # ...then visits another page on this machine
            page.wait_for_function("document.title === 'sent'")
            time.sleep(0.5)
        finally:
            stop()
    assert written(runs) == [".data-first", "first"]  # no run "pwned", no staged photos
    assert sorted(path.name for path in (runs / "first").iterdir()) == before  # no model.onnx


PROBE_PAGE = """<!doctype html><title></title><body>
<img src="APP/api/runs/first/files/confusion.png" onload="document.title='loaded'" onerror="document.title='refused'">
</body>"""


@pytest.mark.slow
def test_no_other_local_server_receives_the_token_and_its_pages_cannot_read_the_apps_files(runs):
    """Issue 40: the token lived in a cookie, which the browser sent to every server on 127.0.0.1 (cookies
    ignore ports); a page there could also show the app's figures. Now the token stays in the tab."""
    app = create_app(runs, token=TOKEN)
    client = client_for(app)
    assert wait_for(client, teach(client)["job"])["state"] == "done"
    seen: list[dict] = []
    with live(app) as base, chromium_browser() as browser:
        other, stop = serve_page(PROBE_PAGE.replace("APP", base), seen)
        try:
            page = browser.new_page()
            page.goto(f"{base}/#token={TOKEN}")
            assert page.url == f"{base}/"  # out of the address bar and history
            page.click("#tab-runs")
            page.wait_for_selector("#runs-table td.run-name")  # the page's own calls carry the token
            page.locator("#runs-table button.open").first.click()
            page.wait_for_selector("#run-details img.figure[src^='blob:']")  # figures fetched with the header
            assert page.context.cookies() == []  # no cookie at all
            page.goto(other)  # the user visits another server on this machine
            page.wait_for_function("document.title !== ''")
            assert page.title() == "refused"  # its page cannot show the app's files
            page.goto(f"{other}again")
        finally:
            stop()
    assert len(seen) >= 2
    assert not [headers for headers in seen if any(TOKEN in str(value) for value in headers.values())]


@pytest.mark.slow
def test_a_run_named_with_quotes_and_markup_is_shown_as_text_and_runs_no_script(runs):
    app = create_app(runs, token=TOKEN)
    client = client_for(app)
    assert wait_for(client, teach(client)["job"])["state"] == "done"
    hostile = [
        "x');document.title='XSS '+location.host;('",
        "<img src=x onerror=\"document.title='XSS2'\">",
        "50% cows #1?",
    ]  # and one that a URL would misread unless escaped
    (runs / "first").rename(runs / hostile[0])
    shutil.copytree(runs / hostile[0], runs / hostile[1])
    shutil.copytree(runs / hostile[0], runs / hostile[2])
    with live(app) as base, chromium_browser() as browser:
        page = browser.new_page()
        page.goto(f"{base}/#token={TOKEN}")
        page.click("#tab-runs")
        page.wait_for_selector("#runs-table td.run-name")
        shown = page.locator("#runs-table td.run-name").all_inner_texts()
        assert sorted(shown) == sorted(hostile)  # the names, character for character
        for index in range(3):
            page.locator("#runs-table button.open").nth(index).click()
            page.wait_for_selector("#run-details h3")
            assert page.inner_text("#run-details h3") in hostile
            with page.expect_download() as download:  # the export's link carries the name, escaped
                page.locator("#runs-table button.onnx").nth(index).click()
            saved = runs.parent / f"download-{index}.onnx"
            download.value.save_as(str(saved))
            assert saved.stat().st_size > 10_000  # the model, not an error page saved under its name
        page.click("#tab-test")
        page.wait_for_selector("#test-run option", state="attached")
        time.sleep(0.3)
        assert page.title() == "pasture"  # no handler ran
        assert page.locator("img[src=x]").count() == 0  # no markup was made from a name


# --------------------------------------------------------------------------------------- big uploads


def _post_streamed(port: int, token: str, size: int, declared: int | None = None) -> tuple[int, bytes]:
    """POST a multipart upload of one `size`-byte file, generated chunk by chunk (the client never holds it)."""
    boundary = "pasture-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; filename="huge.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    chunk = b"\0" * (1 << 20)

    def body():
        yield head
        left = size
        while left > 0:
            yield chunk[: min(left, len(chunk))]
            left -= len(chunk)
        yield tail

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.putrequest("POST", "/api/teach")
    connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    connection.putheader("Content-Length", str(declared or len(head) + size + len(tail)))
    connection.putheader("X-Pasture-Token", token)
    connection.endheaders()
    try:
        if declared is None:
            for part in body():
                connection.send(part)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_an_oversized_upload_is_refused_without_the_server_holding_it(tmp_path):
    """A real `pasture app` process: a 400 MB "photo" is refused at the 20 MiB limit per photo while the
    server's peak memory grows by far less than the upload (before: by the whole upload)."""
    with app_process(tmp_path / "runs") as (server, port, token):
        status, _ = _post_streamed(port, token, 1 << 20)  # warm-up: a 1 MB non-image, refused as no classes
        assert status == 400
        before = peak_rss_kib(server.pid)
        status, answer = _post_streamed(port, token, 400 << 20)
        grown_mib = (peak_rss_kib(server.pid) - before) / 1024
        assert status == 413 and b"huge.png: above the 20 MiB limit per photo" in answer, answer
        assert grown_mib < 100, f"the server's peak memory grew by {grown_mib:.0f} MiB for a 400 MiB upload"
        # a Content-Length over the limit per request is refused before the body is read
        status, answer = _post_streamed(port, token, 0, declared=5 << 30)
        assert status == 413 and b"limit per request" in answer
        assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == [".explanations"]  # nothing left


def test_the_model_card_reaches_the_page_as_elements_and_text_never_markup():
    """The Runs page shows the card as HTML built by DOM calls from a tree the server parsed (issue 44):
    markup inside a class or file name, a raw HTML block, a javascript: link all arrive as text."""
    from pasture.app.runs import CARD_TAGS, card_tree

    tree = card_tree(
        "# Model card: <img src=x onerror=alert(1)> vs cow\n\n"
        "| class | n |\n|---|---|\n| <script>alert(2)</script> | 3 |\n\n"
        "<div onclick=alert(3)>raw block</div>\n\n[click](javascript:alert(4)) and `code`\n"
    )

    def walk(nodes):
        for node in nodes:
            yield node
            yield from walk(node.get("children", []))

    nodes = list(walk(tree))
    assert {node["tag"] for node in nodes if "tag" in node} <= CARD_TAGS
    assert {"h1", "table", "th", "td", "p", "code"} <= {node["tag"] for node in nodes if "tag" in node}
    text = "".join(node["text"] for node in nodes if "text" in node)
    assert "<img src=x onerror=alert(1)>" in text and "<script>alert(2)</script>" in text
    assert "<div onclick=alert(3)>raw block</div>" in text
    assert "[click](javascript:alert(4))" in text  # refused as a link: shown as the text it is
