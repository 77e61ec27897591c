"""Push the folder, both datasources and every dashboard to a running Grafana (grafana-client).

Idempotent: the folder and datasources are looked up by their fixed uids and
created or updated; dashboards are saved with ``overwrite`` under their uids.
Before writing anything, ``GET /api/health`` must answer like Grafana (JSON
with ``database`` and ``version``), so a wrong URL fails with "not a Grafana
server" instead of a confusing error half-way. Every failure is a `PushError`
whose ``reason`` names the step: ``connection``, ``not-grafana``, ``auth``,
``refused``.
"""

from __future__ import annotations

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


def _credential(token: Optional[str], user: Optional[str], password: Optional[str]) -> Any:
    if token:
        return token
    if user:
        return (user, password or "")
    return None


def push(url: str, endpoints: Endpoints, *, token: Optional[str] = None, user: Optional[str] = None,
         password: Optional[str] = None, timeout: float = 10.0,
         progress: Callable[[str], None] = lambda step: None) -> PushResult:
    """Create or update the sealstream folder, datasources and dashboards on the Grafana at ``url``."""
    import niquests
    from grafana_client import GrafanaApi
    from grafana_client.client import (GrafanaClientError, GrafanaException, GrafanaTimeoutError,
                                       GrafanaUnauthorizedError)

    url = url.rstrip("/")
    # grafana-client appends "api" to the URL's path as is: "/grafana/" -> "/grafana/api"
    api = GrafanaApi.from_url(url + "/", credential=_credential(token, user, password), timeout=timeout)

    def call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except GrafanaTimeoutError as exc:
            raise GrafanaUnreachable(f"Grafana at {url} did not answer in {timeout:g} s to {what}") from exc
        except GrafanaUnauthorizedError as exc:
            raise GrafanaAuthError(f"Grafana at {url} refused the credentials while trying to {what} (401): "
                                   "pass --token, or --user/--password of an editor or admin") from exc
        except GrafanaClientError as exc:
            if exc.status_code == 403:
                raise GrafanaAuthError(f"Grafana at {url} denied permission to {what} (403): the token or user "
                                       "needs the Editor role for dashboards and Admin for datasources") from exc
            raise GrafanaRefused(f"Grafana at {url} refused to {what}: {exc.message}") from exc
        except GrafanaException as exc:
            raise GrafanaRefused(f"Grafana at {url} failed to {what}: {exc.message}") from exc
        except ValueError as exc:  # a non-JSON body where Grafana answers JSON (niquests' JSONDecodeError too)
            raise NotGrafana(f"{url} is not a Grafana server: it answered {what} with non-JSON ({exc})") from exc
        except niquests.exceptions.RequestException as exc:
            raise GrafanaUnreachable(f"cannot reach Grafana at {url} to {what}: {exc}") from exc

    def exists(what: str, fn: Callable[..., Any], *args: Any) -> bool:
        try:
            call(what, fn, *args)
            return True
        except GrafanaRefused as exc:
            cause = exc.__cause__
            if isinstance(cause, GrafanaClientError) and cause.status_code == 404:
                return False
            raise

    progress("health")
    try:
        health = call("answer GET /api/health", api.client.GET, "/health")
    except (GrafanaRefused, GrafanaAuthError) as exc:
        # Grafana answers /api/health to anyone; only a 401 (an auth proxy in front) is about credentials
        if isinstance(exc, GrafanaAuthError) and getattr(exc.__cause__, "status_code", None) == 401:
            raise
        detail = " ".join(str(exc.__cause__).split())[:160]
        raise NotGrafana(f"{url} is not a Grafana server: GET /api/health failed ({detail})") from exc
    if not isinstance(health, dict) or "database" not in health or "version" not in health:
        raise NotGrafana(f"{url} is not a Grafana server: GET /api/health answered {str(health)[:120]!r}")
    version = str(health["version"])

    progress("folder")
    if exists("read folder", api.folder.get_folder, FOLDER_UID):
        folder = "exists"
    else:
        call("create the folder", api.folder.create_folder, FOLDER_TITLE, FOLDER_UID)
        folder = "created"

    done_ds: dict[str, str] = {}
    for ds in datasource_definitions(endpoints):
        progress(f"datasource {ds['uid']}")
        if exists(f"read datasource {ds['uid']}", api.datasource.get_datasource_by_uid, ds["uid"]):
            call(f"update datasource {ds['uid']}", api.datasource.update_datasource_by_uid, ds["uid"], ds)
            done_ds[ds["uid"]] = "updated"
        else:
            call(f"create datasource {ds['uid']}", api.datasource.create_datasource, ds)
            done_ds[ds["uid"]] = "created"

    done_db: dict[str, str] = {}
    for name, board in dashboards().items():
        progress(f"dashboard {name}")
        body = to_dict(board)
        had = exists(f"read dashboard {body['uid']}", api.dashboard.get_dashboard, body["uid"])
        call(f"save dashboard {body['uid']}", api.dashboard.update_dashboard,
             {"dashboard": body, "folderUid": FOLDER_UID, "overwrite": True,
              "message": "sealstream dashboards push"})
        done_db[body["uid"]] = "updated" if had else "created"
    return PushResult(url=url, version=version, folder=folder, datasources=done_ds, dashboards=done_db)
