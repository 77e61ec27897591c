"""infra: install, start, check and stop sealstream's local stack of real services.

``Stack(settings).up()`` brings up Kafka (KRaft), MinIO, PostgreSQL (+TimescaleDB
when present) and Prometheus under one state directory; ``down`` stops only
what it started. Errors are :class:`StackError` (see ``infra._errors``).
"""

from ._errors import DownloadError, MissingToolError, PortInUseError, ServiceFailedError, StackError
from ._service import ServiceStatus
from .stack import Stack

__all__ = [
    "Stack",
    "ServiceStatus",
    "StackError",
    "PortInUseError",
    "MissingToolError",
    "DownloadError",
    "ServiceFailedError",
]
