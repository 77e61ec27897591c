"""`sealstream dashboards push` against servers that are not a usable Grafana: clear reason, exit 1.

The servers are real HTTP servers on loopback (http.server): one that is not
Grafana at all (HTML everywhere), one that answers like Grafana's health check
but refuses every credential (401), one that is Grafana-shaped but forbids
writes (403), and a closed port.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from sealstream.cli import cli


def _handler(status_for: dict[str, tuple[int, str, bytes]], default: tuple[int, str, bytes]):
    class H(BaseHTTPRequestHandler):
        seen: list[tuple[str, str, str | None]] = []

        def _answer(self) -> None:
            H.seen.append((self.command, self.path, self.headers.get("Authorization")))
            status, ctype, body = status_for.get(self.path, default)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args: object) -> None:
            pass

    return H


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
