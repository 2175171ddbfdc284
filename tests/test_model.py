"""Fact invariants, scope/channel matching, slots and the hand-written constructors
(filterd/model.py)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from filterd.model import (
    ALL_SENDERS,
    Action,
    Address,
    AuditEntry,
    Channel,
    Decision,
    Fact,
    Kind,
    Reason,
)

T = 1_700_000_000_000


def consent(sender: str = "shop", channel: Channel | None = Channel.SMS) -> Fact:
    return Fact(Kind.CONSENT, sender, channel, T, "test")


def refusal(sender: str = "shop", channel: Channel | None = Channel.SMS) -> Fact:
    return Fact(Kind.REFUSAL, sender, channel, T, "test")


def request(sender: str = "shop", channel: Channel | None = Channel.SMS) -> Fact:
    return Fact(Kind.REQUEST, sender, channel, T, "test", expires_ms=T + 1000)


@pytest.mark.parametrize("kind", [Kind.CONSENT, Kind.REQUEST])
def test_consent_and_request_need_one_sender(kind: Kind) -> None:
    """A consent or request scoped to all senders ('*') is rejected."""
    expires = T + 1 if kind is Kind.REQUEST else None
    with pytest.raises(ValueError, match="needs one sender and one channel"):
        Fact(kind, ALL_SENDERS, Channel.SMS, T, "test", expires_ms=expires)


@pytest.mark.parametrize("kind", [Kind.CONSENT, Kind.REQUEST])
def test_consent_and_request_need_one_channel(kind: Kind) -> None:
    """A consent or request for every channel (channel None) is rejected."""
    expires = T + 1 if kind is Kind.REQUEST else None
    with pytest.raises(ValueError, match=kind.value):
        Fact(kind, "shop", None, T, "test", expires_ms=expires)


def test_refusal_may_be_global_and_for_all_channels() -> None:
    """A refusal may name every sender and every channel."""
    fact = refusal(ALL_SENDERS, None)
    assert fact.sender == ALL_SENDERS
    assert fact.channel is None


def test_request_needs_an_expiry() -> None:
    """A request without expires_ms is rejected."""
    with pytest.raises(ValueError, match="only a request, has an expiry"):
        Fact(Kind.REQUEST, "shop", Channel.SMS, T, "test")


@pytest.mark.parametrize("kind", [Kind.CONSENT, Kind.REFUSAL])
def test_only_requests_have_an_expiry(kind: Kind) -> None:
    """A consent or refusal carrying expires_ms is rejected."""
    with pytest.raises(ValueError, match="only a request, has an expiry"):
        Fact(kind, "shop", Channel.SMS, T, "test", expires_ms=T + 1)


def test_valid_facts_keep_their_fields() -> None:
    """A well-formed fact keeps every field it was given."""
    fact = Fact(Kind.REQUEST, "shop", Channel.EMAIL, T, "web", "form /a 10.0.0.1", "m1", T + 5)
    assert (fact.kind, fact.sender, fact.channel) == (Kind.REQUEST, "shop", Channel.EMAIL)
    assert (fact.at_ms, fact.source, fact.evidence) == (T, "web", "form /a 10.0.0.1")
    assert (fact.message_id, fact.expires_ms) == ("m1", T + 5)


def test_fact_is_frozen() -> None:
    """Facts are immutable values."""
    fact = consent()
    with pytest.raises(dataclasses.FrozenInstanceError):
        fact.at_ms = 0  # type: ignore[misc]


def test_applies_to_own_sender_and_channel() -> None:
    """A fact applies to its own sender on its own channel."""
    assert consent("shop", Channel.SMS).applies_to("shop", Channel.SMS)


def test_does_not_apply_to_another_sender() -> None:
    """A sender-scoped fact does not apply to another sender."""
    assert not consent("shop", Channel.SMS).applies_to("other", Channel.SMS)
    assert not refusal("shop", Channel.SMS).applies_to("other", Channel.SMS)


def test_does_not_apply_to_another_channel() -> None:
    """A fact for one channel does not apply to the other channel."""
    assert not consent("shop", Channel.SMS).applies_to("shop", Channel.EMAIL)
    assert not request("shop", Channel.EMAIL).applies_to("shop", Channel.SMS)


def test_voice_and_sms_facts_do_not_cross() -> None:
    """A voice fact does not apply to sms, nor an sms fact to voice (one phone number,
    separate channels)."""
    assert refusal("shop", Channel.VOICE).applies_to("shop", Channel.VOICE)
    assert not refusal("shop", Channel.VOICE).applies_to("shop", Channel.SMS)
    assert not refusal("shop", Channel.SMS).applies_to("shop", Channel.VOICE)
    assert not consent("shop", Channel.SMS).applies_to("shop", Channel.VOICE)


def test_channel_values() -> None:
    """The channels are spelt email, sms and voice (config, CLI, audit, exports)."""
    assert [c.value for c in Channel] == ["email", "sms", "voice"]


def test_global_refusal_applies_to_every_sender() -> None:
    """A refusal scoped '*' applies to any sender on its channel."""
    fact = refusal(ALL_SENDERS, Channel.EMAIL)
    assert fact.applies_to("shop", Channel.EMAIL)
    assert fact.applies_to("other", Channel.EMAIL)
    assert not fact.applies_to("shop", Channel.SMS)


@pytest.mark.parametrize("channel", list(Channel))
def test_all_channel_refusal_applies_to_every_channel(channel: Channel) -> None:
    """A refusal with channel None applies on email, sms and voice alike."""
    assert refusal("shop", None).applies_to("shop", channel)
    assert refusal(ALL_SENDERS, None).applies_to("anyone", channel)


def test_sender_named_star_is_not_a_wildcard_query() -> None:
    """Asking about sender '*' does not make a sender-scoped fact apply to it."""
    assert not consent("shop", Channel.SMS).applies_to(ALL_SENDERS, Channel.SMS)


def test_slot_is_kind_scope_channel() -> None:
    """A fact's slot is (kind, scope, channel)."""
    assert consent("shop", Channel.SMS).slot == (Kind.CONSENT, "shop", Channel.SMS)
    assert refusal(ALL_SENDERS, None).slot == (Kind.REFUSAL, ALL_SENDERS, None)


def test_slot_ignores_time_source_and_evidence() -> None:
    """Two facts differing only in time, source, evidence or expiry share a slot."""
    old = Fact(Kind.REQUEST, "shop", Channel.SMS, T, "web", "a", "m1", T + 1)
    new = Fact(Kind.REQUEST, "shop", Channel.SMS, T + 9, "cli", "b", "m2", T + 99)
    assert old.slot == new.slot


def test_slots_differ_by_kind_scope_and_channel() -> None:
    """Changing kind, scope or channel gives a different slot."""
    slots = {
        consent("shop", Channel.SMS).slot,
        refusal("shop", Channel.SMS).slot,
        request("shop", Channel.SMS).slot,
        consent("other", Channel.SMS).slot,
        consent("shop", Channel.EMAIL).slot,
        refusal("shop", None).slot,
        refusal(ALL_SENDERS, Channel.SMS).slot,
    }
    assert len(slots) == 7


HAND_BUILT = [Address, Fact, Decision, AuditEntry]


@pytest.mark.parametrize("cls", HAND_BUILT)
def test_constructor_takes_the_fields_in_order_with_their_defaults(cls: type) -> None:
    """Each hand-written __init__ takes exactly the dataclass fields, in order, with the
    fields' defaults (so positional, keyword and dataclasses.replace calls all agree)."""
    parameters = list(inspect.signature(cls).parameters.values())
    wanted = [(f.name, f.default) for f in dataclasses.fields(cls)]
    got = [(p.name, p.default) for p in parameters]
    assert got == [
        (n, inspect.Parameter.empty if d is dataclasses.MISSING else d) for n, d in wanted
    ]


@pytest.mark.parametrize("cls", HAND_BUILT)
def test_constructor_stores_each_argument_in_its_field(cls: type) -> None:
    """Every field holds the argument given for it, none swapped or dropped."""
    values: dict[str, object] = {f.name: f"value-{f.name}" for f in dataclasses.fields(cls)}
    if cls is Fact:
        values["kind"] = Kind.REQUEST  # a request has every field set
    built = cls(**values)
    assert {name: getattr(built, name) for name in values} == values


def test_values_stay_frozen_and_compare_by_value() -> None:
    """Assignment raises; equal fields mean equal values, equal hashes and the same repr."""
    one = Decision(Action.DROP, Reason.REFUSED, refusal())
    two = Decision(Action.DROP, Reason.REFUSED, refusal())
    assert one == two
    assert hash(one) == hash(two)
    assert repr(one) == repr(two)
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.action = Action.DELIVER  # type: ignore[misc]
    address = Address("+8613800138000", Channel.SMS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        address.canonical = "+8613800138001"  # type: ignore[misc]
    assert dataclasses.replace(address, channel=Channel.VOICE) == Address(
        "+8613800138000", Channel.VOICE
    )


def test_replace_still_checks_fact_invariants() -> None:
    """dataclasses.replace goes through the constructor, so a bad fact is still refused."""
    with pytest.raises(ValueError, match="needs one sender and one channel"):
        dataclasses.replace(consent(), sender=ALL_SENDERS)
