"""`sealstream dashboards push`: the error paths, and a full push to an in-memory stand-in for Grafana.

The servers are real HTTP servers on loopback (http.server): one that is not
Grafana at all (HTML everywhere), one that answers like Grafana's health check
but refuses every credential (401), one that is Grafana-shaped but forbids
writes (403), one that fails (500), one that answers HTML after the health
check, one that accepts connections and never answers, and a closed port.

No Grafana server exists on this machine (not a Debian package, no Docker), so
the successful push runs against `StandInGrafana`: the eight endpoints `push`
calls, kept in memory with Grafana's status codes for "not found" and
"already exists", so a push that is not idempotent fails the second time.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from dashboards import Endpoints
from dashboards.build import dashboards, to_dict
from dashboards.push import GrafanaUnreachable, push
from sealstream.cli import cli


def _http_handler(answer: Callable[[str, str, str | None, bytes], tuple[int, str, bytes]]):
    """A request handler class: ``answer(method, path, Authorization, body)`` gives status, type, body."""

    class H(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            sent = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, ctype, body = answer(self.command, self.path, self.headers.get("Authorization"), sent)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args: object) -> None:
            pass

    return H


def _handler(status_for: dict[str, tuple[int, str, bytes]], default: tuple[int, str, bytes]):
    seen: list[tuple[str, str, str | None]] = []

    def answer(method: str, path: str, auth: str | None, body: bytes) -> tuple[int, str, bytes]:
        seen.append((method, path, auth))
        return status_for.get(path, default)

    handler = _http_handler(answer)
    handler.seen = seen
    return handler


@pytest.fixture
def serve() -> Iterator:
    servers: list[ThreadingHTTPServer] = []

    def start(handler) -> str:
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _push(url: str, *args: str) -> tuple[int, dict]:
    if "--pg-dsn" not in args:  # the stand-in needs no real role (and the no-service tier has no stack secrets)
        args = (*args, "--pg-dsn", "postgresql://grafana:stand-in@db.example:5432/sealstream")
    res = CliRunner().invoke(cli, ["dashboards", "push", "--url", url, "--timeout", "5", "--json", *args])
    start = res.output.find("{")
    return res.exit_code, json.loads(res.output[start:res.output.rfind("}") + 1])


HEALTH = (200, "application/json", json.dumps({"database": "ok", "version": "11.6.0", "commit": "x"}).encode())
HTML = (200, "text/html", b"<html><body>hello</body></html>")
DENIED = (401, "application/json", b'{"message":"Invalid username or password"}')


def test_push_to_a_server_that_is_not_grafana(serve) -> None:
    url = serve(_handler({}, HTML))
    code, doc = _push(url, "--user", "admin", "--password", "x")
    assert code == 1 and doc["reason"] == "not-grafana" and doc["error"] == "NotGrafana"
    assert "is not a Grafana server" in doc["message"] and url in doc["message"]


def test_push_to_a_404_server_is_not_grafana(serve) -> None:
    url = serve(_handler({}, (404, "text/plain", b"404 page not found")))
    code, doc = _push(url)
    assert code == 1 and doc["reason"] == "not-grafana" and "404" in doc["message"]


def test_push_with_refused_credentials(serve) -> None:
    handler = _handler({"/api/health": HEALTH}, DENIED)
    url = serve(handler)
    code, doc = _push(url, "--user", "admin", "--password", "wrong")
    assert code == 1 and doc["reason"] == "auth" and doc["error"] == "GrafanaAuthError"
    assert "refused the credentials" in doc["message"] and "401" in doc["message"]
    assert any(p.startswith("/api/folders") and a and a.startswith("Basic ") for _, p, a in handler.seen)


def test_push_with_a_token_without_permission(serve) -> None:
    url = serve(_handler({"/api/health": HEALTH}, (403, "application/json", b'{"message":"Access denied"}')))
    code, doc = _push(url, "--token", "glsa_test")
    assert code == 1 and doc["reason"] == "auth" and "403" in doc["message"]


def test_push_to_a_closed_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, doc = _push(f"http://127.0.0.1:{port}")
    assert code == 1 and doc["reason"] == "connection" and "cannot reach Grafana" in doc["message"]


def test_token_and_user_are_exclusive() -> None:
    code, doc = _push("http://127.0.0.1:9", "--token", "t", "--user", "u")
    assert code == 1 and doc["reason"] == "usage"


def test_push_to_a_failing_grafana_quotes_its_message(serve) -> None:
    url = serve(_handler({"/api/health": HEALTH}, (500, "application/json", b'{"message":"database is locked"}')))
    code, doc = _push(url, "--token", "glsa_test")
    assert code == 1 and doc["reason"] == "refused" and doc["error"] == "GrafanaRefused"
    assert "500" in doc["message"] and "database is locked" in doc["message"]


def test_push_to_a_server_answering_html_after_the_health_check(serve) -> None:
    url = serve(_handler({"/api/health": HEALTH}, HTML))
    code, doc = _push(url, "--token", "glsa_test")
    assert code == 1 and doc["reason"] == "not-grafana" and "non-JSON" in doc["message"]


def test_push_to_a_server_that_never_answers() -> None:
    with socket.socket() as s:  # the kernel accepts the connection; nobody reads or answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(GrafanaUnreachable, match="did not answer in 0.5 s to answer GET /api/health"):
            push(url, Endpoints(), timeout=0.5)


def test_push_to_a_url_that_is_not_http() -> None:
    with pytest.raises(GrafanaUnreachable, match="not an http"):
        push("127.0.0.1:3000", Endpoints())


class StandInGrafana:
    """A stand-in for Grafana, NOT Grafana: the eight endpoints `push` calls, in memory.

    Shaped after Grafana's HTTP API: ``/api/health`` answers anyone; everything
    else needs the one valid Basic or Bearer credential (401 otherwise); reads
    by uid answer 404 when missing; creating a folder or datasource whose uid
    exists answers 409; saving a dashboard needs an existing folder and
    ``overwrite`` to replace one. ``prefix`` serves the API under a sub-path
    (Grafana's ``serve_from_sub_path``), everything else is 404.
    """

    def __init__(self, prefix: str = "", basic: tuple[str, str] = ("admin", "secret"),
                 token: str = "glsa_good") -> None:
        self.prefix = prefix
        self.valid = {"Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode(), f"Bearer {token}"}
        self.folders: dict[str, dict] = {}
        self.datasources: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()

    def handle(self, method: str, path: str, auth: str | None, body: object) -> tuple[int, object]:
        self.requests.append((method, path, auth))
        if not path.startswith(self.prefix + "/api/"):
            return 404, {"message": "Not found"}
        route = path[len(self.prefix):]
        if (method, route) == ("GET", "/api/health"):
            return 200, {"commit": "stand-in", "database": "ok", "version": "11.6.0-stand-in"}
        if auth not in self.valid:
            return 401, {"message": "Unauthorized"}
        parts = route.split("/")[2:]  # "/api/folders/x" -> ["folders", "x"]
        with self.lock:
            if parts[:1] == ["folders"]:
                return self._folders(method, parts[1:], body)
            if parts[:1] == ["datasources"]:
                return self._datasources(method, parts[1:], body)
            if parts[:1] == ["dashboards"]:
                return self._dashboards(method, parts[1:], body)
        return 404, {"message": "Not found"}

    def _folders(self, method: str, rest: list[str], body) -> tuple[int, object]:
        if method == "GET" and len(rest) == 1:
            found = self.folders.get(rest[0])
            return (200, found) if found else (404, {"message": "folder not found", "status": "not-found"})
        if method == "POST" and not rest:
            if body["uid"] in self.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            self.folders[body["uid"]] = {"id": len(self.folders) + 1, "uid": body["uid"], "title": body["title"]}
            return 200, self.folders[body["uid"]]
        return 405, {"message": "method not allowed"}

    def _datasources(self, method: str, rest: list[str], body) -> tuple[int, object]:
        if rest[:1] == ["uid"] and len(rest) == 2:
            found = self.datasources.get(rest[1])
            if found is None:
                return 404, {"message": "Data source not found"}
            if method == "GET":
                return 200, found
            if method == "PUT":
                self.datasources[rest[1]] = {**body, "id": found["id"], "version": found["version"] + 1}
                return 200, {"message": "Datasource updated", "id": found["id"], "name": body["name"]}
        if method == "POST" and not rest:
            if body["uid"] in self.datasources or any(d["name"] == body["name"] for d in self.datasources.values()):
                return 409, {"message": "data source with the same name already exists"}
            self.datasources[body["uid"]] = {**body, "id": len(self.datasources) + 1, "version": 1}
            return 200, {"message": "Datasource added", "id": len(self.datasources), "name": body["name"]}
        return 405, {"message": "method not allowed"}

    def _dashboards(self, method: str, rest: list[str], body) -> tuple[int, object]:
        if method == "GET" and rest[:1] == ["uid"] and len(rest) == 2:
            found = self.dashboards.get(rest[1])
            return (200, found) if found else (404, {"message": "Dashboard not found"})
        if method == "POST" and rest == ["db"]:
            board, uid = body["dashboard"], body["dashboard"]["uid"]
            if body.get("folderUid") not in self.folders:
                return 400, {"message": "folder not found"}
            old = self.dashboards.get(uid)
            if old and not body.get("overwrite"):
                return 412, {"message": "A dashboard with the same uid already exists", "status": "name-exists"}
            version = old["dashboard"]["version"] + 1 if old else 1
            self.dashboards[uid] = {"dashboard": {**board, "version": version},
                                    "meta": {"folderUid": body["folderUid"], "message": body.get("message")}}
            return 200, {"status": "success", "uid": uid, "version": version, "url": f"{self.prefix}/d/{uid}"}
        return 405, {"message": "method not allowed"}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        def answer(method: str, path: str, auth: str | None, body: bytes) -> tuple[int, str, bytes]:
            status, doc = self.handle(method, path, auth, json.loads(body) if body else None)
            return status, "application/json", json.dumps(doc).encode()

        return _http_handler(answer)


DASHBOARD_UIDS = {to_dict(board)["uid"] for board in dashboards().values()}
DATASOURCE_UIDS = {"sealstream-prometheus", "sealstream-postgres"}


def test_push_creates_then_updates_on_the_stand_in(serve) -> None:
    grafana = StandInGrafana()
    url = serve(grafana.handler())
    code, first = _push(url, "--user", "admin", "--password", "secret", "--prometheus-url", "http://prom.example:9090")
    assert code == 0, first
    assert first["version"] == "11.6.0-stand-in" and first["url"] == url
    assert first["folder"] == "created"
    assert first["datasources"] == {uid: "created" for uid in DATASOURCE_UIDS}
    assert first["dashboards"] == {uid: "created" for uid in DASHBOARD_UIDS}
    assert set(grafana.folders) == {"sealstream"} and set(grafana.datasources) == DATASOURCE_UIDS
    assert grafana.datasources["sealstream-prometheus"]["url"] == "http://prom.example:9090"
    assert set(grafana.dashboards) == DASHBOARD_UIDS
    assert {d["meta"]["folderUid"] for d in grafana.dashboards.values()} == {"sealstream"}

    code, second = _push(url, "--user", "admin", "--password", "secret", "--prometheus-url", "http://prom2:9090")
    assert code == 0, second
    assert second["folder"] == "exists"
    assert second["datasources"] == {uid: "updated" for uid in DATASOURCE_UIDS}
    assert second["dashboards"] == {uid: "updated" for uid in DASHBOARD_UIDS}
    assert grafana.datasources["sealstream-prometheus"]["url"] == "http://prom2:9090"
    assert {d["dashboard"]["version"] for d in grafana.dashboards.values()} == {2}

    basic = "Basic " + base64.b64encode(b"admin:secret").decode()
    api = [(m, p, a) for m, p, a in grafana.requests if p != "/api/health"]
    assert api and all(a == basic for _, _, a in api)
    assert [m for m, p, _ in grafana.requests if p == "/api/folders"] == ["POST"]  # created once, read after


def test_push_with_a_token_under_a_path_prefix(serve) -> None:
    grafana = StandInGrafana(prefix="/grafana")
    base = serve(grafana.handler())
    result = push(f"{base}/grafana/", Endpoints(), token="glsa_good", timeout=5)
    assert result.url == f"{base}/grafana" and result.folder == "created"
    assert set(result.dashboards) == DASHBOARD_UIDS and set(grafana.dashboards) == DASHBOARD_UIDS
    assert grafana.requests and all(p.startswith("/grafana/api/") for _, p, _ in grafana.requests)
    assert {a for _, p, a in grafana.requests if p != "/grafana/api/health"} == {"Bearer glsa_good"}


def test_push_with_a_wrong_password_on_the_stand_in(serve) -> None:
    grafana = StandInGrafana()
    code, doc = _push(serve(grafana.handler()), "--user", "admin", "--password", "nope")
    assert code == 1 and doc["reason"] == "auth" and "401" in doc["message"]
    assert not grafana.folders and not grafana.datasources and not grafana.dashboards
