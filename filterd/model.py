"""Frozen values shared by every layer: addresses, facts, submissions, decisions.

Nothing here does I/O. Times are integer milliseconds since the Unix epoch so
that "newer than or as new as" (SPEC §1) compares exactly. The values built for
every recipient have a hand-written `__init__` (see `_slot_setters`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

ALL_SENDERS = "*"
"""The scope of a global refusal: every sender."""

MAX_EVIDENCE_BYTES = 4096
"""Evidence is free text (form URL, IP, ticket); longer text is refused."""


class Channel(enum.Enum):
    """A delivery channel: email to an email address; sms and voice (commercial
    calls, 商业性电话) to a phone number."""

    EMAIL = "email"
    SMS = "sms"
    VOICE = "voice"


class Kind(enum.Enum):
    """What a fact says about a consumer."""

    CONSENT = "consent"
    REQUEST = "request"
    REFUSAL = "refusal"


_REFUSAL = Kind.REFUSAL
_REQUEST = Kind.REQUEST
"""Bound to module names for Fact's checks: a global name costs ~100 instructions under
CPython 3.11, `Kind.REFUSAL` (a class-attribute lookup) ~900 (callgrind)."""


class MessageClass(enum.Enum):
    """How a message is declared (the account's stream, possibly upgraded)."""

    COMMERCIAL = "commercial"
    TRANSACTIONAL = "transactional"


class Action(enum.Enum):
    """What happens to one recipient of one message."""

    DELIVER = "deliver"
    DROP = "drop"
    DEFER = "defer"


class Reason(enum.Enum):
    """Why a recipient was dropped or deferred."""

    REFUSED = "refused"
    NO_CONSENT = "no_consent"
    REGISTRY_UNAVAILABLE = "registry_unavailable"
    QUIET_HOURS = "quiet_hours"
    """Deferred: inside the quiet hours of the recipient's time zone."""
    NO_SIGNATURE = "no_signature"
    """A commercial SMS without its sender's 【signature】."""
    NO_CANCEL_METHOD = "no_cancel_method"
    """A commercial message without a way to cancel (List-Unsubscribe, 回T退订)."""


@dataclass(frozen=True, slots=True)
class Address:
    """A normalised consumer address: E.164 (`+8613800138000`) or canonical email, and
    the channel it is reached on (email; a phone number sms, or voice when named)."""

    canonical: str
    channel: Channel

    def __init__(self, canonical: str, channel: Channel) -> None:
        set_canonical, set_channel = _ADDRESS_SLOTS
        set_canonical(self, canonical)
        set_channel(self, channel)


@dataclass(frozen=True, slots=True)
class Fact:
    """One registry fact about one consumer.

    `sender` is a sender name or `ALL_SENDERS`; `channel` None means every
    channel. Consent and request facts always name a sender and a channel; a
    request carries `expires_ms`.
    """

    kind: Kind
    sender: str
    channel: Channel | None
    at_ms: int
    source: str
    evidence: str | None = None
    message_id: str | None = None
    expires_ms: int | None = None

    def __init__(  # noqa: PLR0917 - the fields, positional as a dataclass takes them
        self,
        kind: Kind,
        sender: str,
        channel: Channel | None,
        at_ms: int,
        source: str,
        evidence: str | None = None,
        message_id: str | None = None,
        expires_ms: int | None = None,
    ) -> None:
        if kind is not _REFUSAL and (sender == ALL_SENDERS or channel is None):
            raise ValueError(f"a {kind.value} needs one sender and one channel")
        if (kind is _REQUEST) != (expires_ms is not None):
            raise ValueError("a request, and only a request, has an expiry")
        set_kind, set_sender, set_channel, set_at, set_source, set_evidence, set_id, set_expires = (
            _FACT_SLOTS
        )
        set_kind(self, kind)
        set_sender(self, sender)
        set_channel(self, channel)
        set_at(self, at_ms)
        set_source(self, source)
        set_evidence(self, evidence)
        set_id(self, message_id)
        set_expires(self, expires_ms)

    def applies_to(self, sender: str, channel: Channel) -> bool:
        """True when this fact's scope and channel cover (sender, channel)."""
        scope_ok = self.sender in (sender, ALL_SENDERS)
        return scope_ok and (self.channel is None or self.channel is channel)

    @property
    def slot(self) -> tuple[Kind, str, Channel | None]:
        """The (kind, scope, channel) a newer fact of the same slot supersedes."""
        return (self.kind, self.sender, self.channel)


@dataclass(frozen=True, slots=True)
class Submission:
    """One recipient of one message, as the policy sees it."""

    sender: str
    channel: Channel
    message_class: MessageClass


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one recipient, with the fact that decided it (if any)."""

    action: Action
    reason: Reason | None = None
    basis: Fact | None = None
    resume: str | None = None
    """For a quiet-hours deferral: when sending may resume, "08:00 Asia/Shanghai"."""

    def __init__(
        self,
        action: Action,
        reason: Reason | None = None,
        basis: Fact | None = None,
        resume: str | None = None,
    ) -> None:
        set_action, set_reason, set_basis, set_resume = _DECISION_SLOTS
        set_action(self, action)
        set_reason(self, reason)
        set_basis(self, basis)
        set_resume(self, resume)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit-log entry: a drop, a deferral, a fact written, or a bulk import.

    `consumer` is the hex consumer hash, never an address.
    """

    at_ms: int
    event: str
    sender: str | None = None
    consumer: str | None = None
    channel: str | None = None
    reason: str | None = None
    source: str | None = None
    origin: str | None = None
    message_id: str | None = None
    detail: str | None = None

    def __init__(  # noqa: PLR0917 - the fields, positional as a dataclass takes them
        self,
        at_ms: int,
        event: str,
        sender: str | None = None,
        consumer: str | None = None,
        channel: str | None = None,
        reason: str | None = None,
        source: str | None = None,
        origin: str | None = None,
        message_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        (
            set_at,
            set_event,
            set_sender,
            set_consumer,
            set_channel,
            set_reason,
            set_source,
            set_origin,
            set_id,
            set_detail,
        ) = _AUDIT_SLOTS
        set_at(self, at_ms)
        set_event(self, event)
        set_sender(self, sender)
        set_consumer(self, consumer)
        set_channel(self, channel)
        set_reason(self, reason)
        set_source(self, source)
        set_origin(self, origin)
        set_id(self, message_id)
        set_detail(self, detail)


_SlotSetter = Callable[[Any, Any], None]
"""Stores one field's value in an instance, bypassing the frozen `__setattr__`."""


def _slot_setters(cls: type) -> tuple[_SlotSetter, ...]:
    """The `__set__` of each field's slot of a frozen, slotted dataclass, in field order.

    The values built for every recipient (Address, Fact, Decision, AuditEntry) write
    their own `__init__` with these: a frozen dataclass's generated `__init__` stores
    each field with `object.__setattr__`, which under CPython 3.11 costs ~1,260
    instructions a field (callgrind); the slot's own descriptor costs ~600, so an
    Address is built in ~3,600 instructions instead of ~4,900 and an AuditEntry in
    ~13,100 instead of ~19,600. Assignment by ordinary code still raises; equality,
    hash, repr, `dataclasses.fields` and `dataclasses.replace` are the dataclass's.
    """
    return tuple(getattr(cls, field.name).__set__ for field in fields(cls))


_ADDRESS_SLOTS = _slot_setters(Address)
_FACT_SLOTS = _slot_setters(Fact)
_DECISION_SLOTS = _slot_setters(Decision)
_AUDIT_SLOTS = _slot_setters(AuditEntry)


class WriteResult(enum.Enum):
    """What a fact write did."""

    STORED = "stored"
    SUPERSEDED = "superseded"
    """A fact of the same kind, scope and channel that is newer is kept."""
    REFUSAL_ON_RECORD = "refusal_on_record"
    """A consent/request without evidence met a refusal: nothing written."""


@dataclass(frozen=True, slots=True)
class FactRequest:
    """A fact to record for one address, before ids and times are filled in."""

    address: Address
    kind: Kind
    sender: str
    channel: Channel | None
    source: str
    evidence: str | None = None
    message_id: str | None = None
    at_ms: int | None = None
    ttl_s: int | None = None


class BulkRow(NamedTuple):
    """One fact of a bulk import, already keyed by consumer id (cheap to build)."""

    consumer: bytes
    kind: Kind
    sender: str
    channel: Channel | None
    at_ms: int
    source: str
    evidence: str | None = None
    expires_ms: int | None = None

    def fact(self) -> Fact:
        """The row as a Fact."""
        return Fact(
            self.kind,
            self.sender,
            self.channel,
            self.at_ms,
            self.source,
            self.evidence,
            None,
            self.expires_ms,
        )
