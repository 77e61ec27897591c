"""Push the folder, both datasources and every dashboard to a running Grafana (stdlib HTTP).

Idempotent: the folder and datasources are looked up by their fixed uids and
created or updated; dashboards are saved with ``overwrite`` under their uids.
Before writing anything, ``GET /api/health`` must answer like Grafana (JSON
with ``database`` and ``version``), so a wrong URL fails with "not a Grafana
server" instead of a confusing error half-way. Every failure is a `PushError`
whose ``reason`` names the step: ``connection``, ``not-grafana``, ``auth``,
``refused``.

Its eight endpoints are called through `urllib.request` and `json`, not a Grafana
client library: grafana-client's HTTP stack brings urllib3-future, which
replaces the ``urllib3`` package in the environment, and MinIO's client (the
pipeline's blob PUTs) then spends about a third more CPU per request.
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .build import dashboards, to_dict
from .datasources import FOLDER_TITLE, FOLDER_UID, Endpoints, datasource_definitions

__all__ = ["PushError", "GrafanaUnreachable", "NotGrafana", "GrafanaAuthError", "GrafanaRefused", "PushResult",
           "push"]


class PushError(Exception):
    """`push` failed; ``reason`` is machine-readable, the message says what to fix."""

    reason = "push"


class GrafanaUnreachable(PushError):
    reason = "connection"


class NotGrafana(PushError):
    reason = "not-grafana"


class GrafanaAuthError(PushError):
    reason = "auth"


class GrafanaRefused(PushError):
    reason = "refused"


@dataclass(frozen=True)
class PushResult:
    """What a push did: Grafana's version, and per object ``created`` or ``updated``."""

    url: str
    version: str
    folder: str
    datasources: dict[str, str] = field(default_factory=dict)
    dashboards: dict[str, str] = field(default_factory=dict)


class _SameOriginAuth(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never carry the credentials to another scheme, host or port."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(new.full_url) != _origin(req.full_url):
            new.remove_header("Authorization")
        return new


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc


def _authorization(token: Optional[str], user: Optional[str], password: Optional[str]) -> Optional[str]:
    if token:
        return f"Bearer {token}"
    if user:
        return "Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
    return None


def _message(body: bytes) -> str:
    """Grafana's ``message`` field of an error body, else the body's first words."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "message" in doc:
        return str(doc["message"])
    return " ".join(body.decode("utf-8", "replace").split())[:160]


class _Api:
    """Grafana's HTTP API under ``url``: ``call`` answers the decoded JSON or raises a `PushError`."""

    def __init__(self, url: str, authorization: Optional[str], timeout: float) -> None:
        self.url, self.timeout = url, timeout
        self.headers = {"Accept": "application/json", "User-Agent": "sealstream-dashboards-push"}
        if authorization:
            self.headers["Authorization"] = authorization
        self.opener = urllib.request.build_opener(_SameOriginAuth)

    def send(self, method: str, path: str, what: str, body: Any = None) -> tuple[int, bytes]:
        """Status and body of one request (any status); no answer is `GrafanaUnreachable`."""
        data = None if body is None else json.dumps(body).encode()
        headers = self.headers if data is None else {**self.headers, "Content-Type": "application/json"}
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            try:
                resp = self.opener.open(req, timeout=self.timeout)
            except urllib.error.HTTPError as exc:  # a status >= 400 (or an unfollowed 3xx): still an answer
                resp = exc
            with resp:
                return resp.getcode(), resp.read()
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise self._timed_out(what) from exc
            raise GrafanaUnreachable(f"cannot reach Grafana at {self.url} to {what}: {exc.reason}") from exc
        except TimeoutError as exc:
            raise self._timed_out(what) from exc
        except (OSError, http.client.HTTPException) as exc:  # reset, closed early, not HTTP
            raise GrafanaUnreachable(f"cannot reach Grafana at {self.url} to {what}: "
                                     f"{type(exc).__name__} {exc}".rstrip()) from exc

    def _timed_out(self, what: str) -> GrafanaUnreachable:
        return GrafanaUnreachable(f"Grafana at {self.url} did not answer in {self.timeout:g} s to {what}")

    def call(self, method: str, path: str, what: str, body: Any = None) -> Any:
        """The JSON answer of a 2xx; any other status is the matching `PushError`."""
        status, raw = self.send(method, path, what, body)
        self.check(status, raw, what)
        return self.decode(raw, what)

    def exists(self, path: str, what: str) -> bool:
        """Whether ``GET path`` finds the object (a 404 says it does not exist)."""
        status, raw = self.send("GET", path, what)
        if status == 404:
            return False
        self.check(status, raw, what)
        self.decode(raw, what)
        return True

    def check(self, status: int, raw: bytes, what: str) -> None:
        """Raise the `PushError` for a status that is not a success."""
        if status == 401:
            raise GrafanaAuthError(f"Grafana at {self.url} refused the credentials while trying to {what} (401): "
                                   "pass --token, or --user/--password of an editor or admin")
        if status == 403:
            raise GrafanaAuthError(f"Grafana at {self.url} denied permission to {what} (403): the token or user "
                                   "needs the Editor role for dashboards and Admin for datasources")
        if not 200 <= status < 300:
            raise GrafanaRefused(f"Grafana at {self.url} refused to {what} ({status}): {_message(raw)}")

    def decode(self, raw: bytes, what: str) -> Any:
        """The JSON of an answer body (None when empty); anything else is `NotGrafana`."""
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            start = " ".join(raw[:80].decode("utf-8", "replace").split())
            raise NotGrafana(f"{self.url} is not a Grafana server: it answered {what} with non-JSON "
                             f"({start!r})") from exc


def _health(api: _Api) -> str:
    """Grafana's version, once ``GET /api/health`` has answered like Grafana."""
    what = "answer GET /api/health"
    status, raw = api.send("GET", "/api/health", what)
    if status == 401:  # Grafana answers /api/health to anyone: a 401 is an auth proxy in front of it
        api.check(status, raw, what)
    if not 200 <= status < 300:
        raise NotGrafana(f"{api.url} is not a Grafana server: GET /api/health answered {status} "
                         f"({_message(raw)})")
    health = api.decode(raw, what)
    if not isinstance(health, dict) or "database" not in health or "version" not in health:
        raise NotGrafana(f"{api.url} is not a Grafana server: GET /api/health answered {str(health)[:120]!r}")
    return str(health["version"])


def push(url: str, endpoints: Endpoints, *, token: Optional[str] = None, user: Optional[str] = None,
         password: Optional[str] = None, timeout: float = 10.0,
         progress: Callable[[str], None] = lambda step: None) -> PushResult:
    """Create or update the sealstream folder, datasources and dashboards on the Grafana at ``url``."""
    url = url.rstrip("/")
    scheme, netloc = _origin(url)
    if scheme not in ("http", "https") or not netloc:
        raise GrafanaUnreachable(f"cannot reach Grafana at {url}: not an http:// or https:// URL")
    # a path prefix stays: http://host/grafana -> http://host/grafana/api/...
    api = _Api(url, _authorization(token, user, password), timeout)

    progress("health")
    version = _health(api)

    progress("folder")
    if api.exists(f"/api/folders/{FOLDER_UID}", "read folder"):
        folder = "exists"
    else:
        api.call("POST", "/api/folders", "create the folder", {"uid": FOLDER_UID, "title": FOLDER_TITLE})
        folder = "created"

    done_ds: dict[str, str] = {}
    for ds in datasource_definitions(endpoints):
        uid = ds["uid"]
        progress(f"datasource {uid}")
        if api.exists(f"/api/datasources/uid/{uid}", f"read datasource {uid}"):
            api.call("PUT", f"/api/datasources/uid/{uid}", f"update datasource {uid}", ds)
            done_ds[uid] = "updated"
        else:
            api.call("POST", "/api/datasources", f"create datasource {uid}", ds)
            done_ds[uid] = "created"

    done_db: dict[str, str] = {}
    for name, board in dashboards().items():
        progress(f"dashboard {name}")
        body = to_dict(board)
        uid = body["uid"]
        had = api.exists(f"/api/dashboards/uid/{uid}", f"read dashboard {uid}")
        api.call("POST", "/api/dashboards/db", f"save dashboard {uid}",
                 {"dashboard": body, "folderUid": FOLDER_UID, "overwrite": True,
                  "message": "sealstream dashboards push"})
        done_db[uid] = "updated" if had else "created"
    return PushResult(url=url, version=version, folder=folder, datasources=done_ds, dashboards=done_db)
