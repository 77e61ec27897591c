"""Errors of the local stack.

One public error, :class:`StackError`; its message is one sentence that names
the problem and the fix, and ``reason`` is a machine-readable code::

    StackError
    ├── PortInUseError       a service's port is held by another process
    ├── MissingToolError     java/mvn/go/PostgreSQL/Prometheus absent and not installable
    ├── DownloadError        Maven Central, the Go module proxy or apt failed
    └── ServiceFailedError   a service did not start or did not become healthy
"""

from __future__ import annotations

__all__ = [
    "StackError",
    "PortInUseError",
    "MissingToolError",
    "DownloadError",
    "ServiceFailedError",
]


class StackError(Exception):
    """The stack could not do what was asked; the message says what to do."""

    reason = "stack-error"

    def __init__(self, message: str, *, service: str | None = None) -> None:
        super().__init__(message)
        self.service = service

    def to_dict(self) -> dict[str, str | None]:
        return {"error": self.reason, "service": self.service, "message": str(self)}


class PortInUseError(StackError):
    reason = "port-in-use"


class MissingToolError(StackError):
    reason = "missing-tool"


class DownloadError(StackError):
    reason = "download-failed"


class ServiceFailedError(StackError):
    reason = "service-failed"
