"""The vocabulary of the sans-I/O core: events in, effects out.

Events: `MessageReceived`, `TimerFired`, `RequestSubmitted`,
`RequestsSubmitted`, `Tick`. Effects: `Send`, `Broadcast`, `SetTimer`,
`CancelTimer`, `CommitBlock`, `Persist`, `Reply`; the host carries them out
in order. Also here: `Equivocation`, the proof of a double signature the core
keeps for reputation (`ledger.contracts.evidence` turns it into a
transaction, so it lives here, below the contracts, and the contracts need not
import the core), `BlockSource` and the timer ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Union

from ..values import Block, CommitCertificate, Transaction, TxId
from ..messages import Message

if TYPE_CHECKING:
    from .safety import SafetyState

__all__ = [
    "MessageReceived",
    "TimerFired",
    "RequestSubmitted",
    "RequestsSubmitted",
    "Tick",
    "Event",
    "Send",
    "Broadcast",
    "SetTimer",
    "CancelTimer",
    "CommitBlock",
    "Persist",
    "Reply",
    "Effect",
    "Equivocation",
    "BlockSource",
]

# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class MessageReceived:
    sender: str
    msg: Message


@dataclass(frozen=True)
class TimerFired:
    timer_id: tuple


@dataclass(frozen=True)
class RequestSubmitted:
    """A client hands `tx` to this node; replies go to `client` (opaque to the core).

    `relay=False` when the client sends the request to every sealer itself (the
    client library does), so sealers need not relay it to each other; requests
    that wait longer than a block time still reach the primary on status ticks.
    """

    tx: Transaction
    client: Any = None
    relay: bool = True


@dataclass(frozen=True)
class RequestsSubmitted:
    """A client hands several transactions at once (one frame); each is handled
    as by `RequestSubmitted`, and the primary considers cutting a block once,
    after all of them."""

    txs: tuple[Transaction, ...]
    client: Any = None
    relay: bool = True


@dataclass(frozen=True)
class Tick:
    """The host's current time in milliseconds (the core never reads a clock)."""

    now: int


Event = Union[MessageReceived, TimerFired, RequestSubmitted, RequestsSubmitted, Tick]

# ---------------------------------------------------------------- effects


@dataclass(frozen=True)
class Send:
    to: str
    msg: Message


@dataclass(frozen=True)
class Broadcast:
    """Send `msg` to each node of `to` (never includes the sender)."""

    msg: Message
    to: tuple[str, ...]


@dataclass(frozen=True)
class SetTimer:
    """(Re)arm timer `timer_id` to fire once after `delay` ms."""

    timer_id: tuple
    delay: int


@dataclass(frozen=True)
class CancelTimer:
    timer_id: tuple


@dataclass(frozen=True)
class CommitBlock:
    """Persist this block (append-only, fsync) before the effects after it."""

    block: Block
    cert: CommitCertificate
    results: tuple[Any, ...]


@dataclass(frozen=True)
class Reply:
    client: Any
    tx_id: TxId
    result: Any


@dataclass(frozen=True)
class Persist:
    """Durably record `state` (fsync) before the effects after it: they are
    messages signed on the strength of it (see `SafetyState`)."""

    state: SafetyState


Effect = Union[Send, Broadcast, SetTimer, CancelTimer, CommitBlock, Persist, Reply]


@dataclass(frozen=True)
class Equivocation:
    """Proof that `node` signed two `kind` messages (``preprepare``: two
    proposals as primary of `view`; ``prepare``/``commit``: two votes) for
    one (`view`, `height`) with different digests. Nodes submit it as
    ``reputation.evidence`` (`ledger.contracts.evidence`)."""

    node: str
    view: int
    height: int
    digest_a: bytes
    sig_a: bytes
    digest_b: bytes
    sig_b: bytes
    kind: str = "preprepare"


class BlockSource(Protocol):
    """Read access to committed blocks older than the replica keeps in memory."""

    def get(self, height: int) -> tuple[Block, CommitCertificate] | None: ...


# ---------------------------------------------------------------- timers

VIEW = "view"
CUT = "cut"
STATUS = "status"
FETCH = "fetch"


def timer(name: str, *args: Any) -> tuple:
    return (name, *args)
