"""Which daily ``readings`` partitions a write needs (pure), and creating them.

Plain-PostgreSQL flavour: one partition per UTC day, ``readings_pYYYYMMDD``,
created on demand by the writer before it inserts rows of that day.  Only days
inside the policy's window around today get a partition; rows outside it
(a device clock far off, a very old backfill) land in ``readings_default``
rather than creating a partition per stray day.  Creating a day later moves
its rows out of the default partition.  In the TimescaleDB flavour the SQL
function is a no-op and chunks are TimescaleDB's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Iterable

__all__ = ["PartitionPolicy", "partition_name", "days_to_create"]


@dataclass(frozen=True)
class PartitionPolicy:
    """Daily partitions are created for days in ``[today - max_age_days, today + max_ahead_days]``."""

    max_age_days: int = 400
    max_ahead_days: int = 2

    def covers(self, day: date, today: date) -> bool:
        return today - timedelta(days=self.max_age_days) <= day <= today + timedelta(days=self.max_ahead_days)


def partition_name(day: date) -> str:
    """The partition holding UTC day `day`."""
    return f"readings_p{day:%Y%m%d}"


def days_to_create(days: Iterable[date], today: date, policy: PartitionPolicy, known: frozenset[date]) -> list[date]:
    """Days of a write that need an ensure call: covered by `policy`, not yet `known`."""
    return sorted({d for d in days if d not in known and policy.covers(d, today)})
