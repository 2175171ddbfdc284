"""The decision rule of SPEC §1 as the pure function decide() (filterd/policy.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.model import (
    ALL_SENDERS,
    Action,
    Channel,
    Decision,
    Fact,
    Kind,
    MessageClass,
    Reason,
    Submission,
)
from filterd.policy import FailMode, decide

NOW = 1_700_000_000_000
HOUR = 3_600_000
SMS, EMAIL, VOICE = Channel.SMS, Channel.EMAIL, Channel.VOICE


def commercial(sender: str = "A", channel: Channel = SMS) -> Submission:
    return Submission(sender, channel, MessageClass.COMMERCIAL)


def transactional(sender: str = "A", channel: Channel = SMS) -> Submission:
    return Submission(sender, channel, MessageClass.TRANSACTIONAL)


def consent(at: int, sender: str = "A", channel: Channel = SMS) -> Fact:
    return Fact(Kind.CONSENT, sender, channel, at, "test")


def request(at: int, expires: int, sender: str = "A", channel: Channel = SMS) -> Fact:
    return Fact(Kind.REQUEST, sender, channel, at, "test", expires_ms=expires)


def refusal(at: int, sender: str = "A", channel: Channel | None = SMS) -> Fact:
    return Fact(Kind.REFUSAL, sender, channel, at, "test")


DELIVER = (Action.DELIVER, None)
REFUSED = (Action.DROP, Reason.REFUSED)
NO_CONSENT = (Action.DROP, Reason.NO_CONSENT)


def outcome(decision: Decision) -> tuple[Action, Reason | None]:
    return decision.action, decision.reason


# --- the rows of SPEC §1 -------------------------------------------------------------


@pytest.mark.parametrize(
    "facts",
    [[], [refusal(NOW - HOUR, ALL_SENDERS, None)], [consent(NOW - HOUR)]],
    ids=["no-facts", "global-refusal", "consent"],
)
def test_transactional_always_delivers(facts: list[Fact]) -> None:
    """A transactional message is delivered whatever the registry says."""
    decision = decide(transactional(), facts, NOW)
    assert outcome(decision) == DELIVER
    assert decision.basis is None


@pytest.mark.parametrize("mode", list(FailMode))
def test_transactional_delivers_when_registry_unavailable(mode: FailMode) -> None:
    """A transactional message is delivered even when the registry cannot be read."""
    assert outcome(decide(transactional(), None, NOW, mode)) == DELIVER


def test_no_facts_is_no_consent() -> None:
    """A commercial message to a consumer with no facts is dropped: no_consent."""
    assert decide(commercial(), [], NOW) == Decision(Action.DROP, Reason.NO_CONSENT)


def test_consent_delivers() -> None:
    """A consent for (sender, channel) delivers, with the consent as basis."""
    fact = consent(NOW - HOUR)
    assert decide(commercial(), [fact], NOW) == Decision(Action.DELIVER, None, fact)


def test_refusal_alone_is_refused() -> None:
    """A refusal with no consent drops the message as refused."""
    fact = refusal(NOW - HOUR)
    assert decide(commercial(), [fact], NOW) == Decision(Action.DROP, Reason.REFUSED, fact)


def test_refusal_newer_than_consent_drops_refused() -> None:
    """A refusal newer than the consent wins: drop, refused."""
    no = refusal(NOW - HOUR)
    decision = decide(commercial(), [consent(NOW - 2 * HOUR), no], NOW)
    assert decision == Decision(Action.DROP, Reason.REFUSED, no)


def test_refusal_as_new_as_consent_drops_refused() -> None:
    """A refusal as new as the consent (same millisecond) wins: drop, refused."""
    no = refusal(NOW - HOUR)
    for facts in ([consent(NOW - HOUR), no], [no, consent(NOW - HOUR)]):
        assert decide(commercial(), facts, NOW) == Decision(Action.DROP, Reason.REFUSED, no)


def test_refusal_as_new_as_request_drops_refused() -> None:
    """A refusal as new as a valid request wins too."""
    facts = [request(NOW - HOUR, NOW + HOUR), refusal(NOW - HOUR)]
    assert outcome(decide(commercial(), facts, NOW)) == REFUSED


def test_consent_newer_than_refusal_delivers() -> None:
    """A consent one millisecond newer than the refusal re-opens the sender: deliver."""
    yes = consent(NOW - HOUR + 1)
    decision = decide(commercial(), [refusal(NOW - HOUR), yes], NOW)
    assert decision == Decision(Action.DELIVER, None, yes)


def test_sender_consent_after_global_refusal_delivers() -> None:
    """A global refusal ('*') followed by a later consent to the sender: deliver."""
    yes = consent(NOW - HOUR)
    facts = [refusal(NOW - 2 * HOUR, ALL_SENDERS, None), yes]
    assert decide(commercial(), facts, NOW) == Decision(Action.DELIVER, None, yes)


def test_global_refusal_newer_than_consent_drops_refused() -> None:
    """A global refusal newer than the sender's consent: drop, refused."""
    no = refusal(NOW - HOUR, ALL_SENDERS, SMS)
    facts = [consent(NOW - 2 * HOUR), no]
    assert decide(commercial(), facts, NOW) == Decision(Action.DROP, Reason.REFUSED, no)


def test_global_refusal_blocks_every_sender() -> None:
    """A global refusal stops a sender that has no later consent of its own."""
    facts = [consent(NOW - 2 * HOUR, "A"), refusal(NOW - HOUR, ALL_SENDERS, SMS)]
    assert outcome(decide(commercial("A"), facts, NOW)) == REFUSED
    assert outcome(decide(commercial("B"), facts, NOW)) == REFUSED


def test_consent_for_one_sender_does_not_permit_another() -> None:
    """A consent to sender A does not permit sender B: no_consent."""
    facts = [consent(NOW - HOUR, "A")]
    assert outcome(decide(commercial("B"), facts, NOW)) == NO_CONSENT


def test_sms_consent_does_not_permit_email() -> None:
    """Channels are separate: an sms consent does not permit email."""
    facts = [consent(NOW - HOUR, "A", SMS)]
    assert outcome(decide(commercial("A", EMAIL), facts, NOW)) == NO_CONSENT
    assert outcome(decide(commercial("A", SMS), facts, NOW)) == DELIVER


def test_email_refusal_does_not_block_sms() -> None:
    """A refusal of email leaves an sms consent in force."""
    facts = [consent(NOW - 2 * HOUR, "A", SMS), refusal(NOW - HOUR, "A", EMAIL)]
    assert outcome(decide(commercial("A", SMS), facts, NOW)) == DELIVER


def test_voice_and_sms_are_separate_channels() -> None:
    """A voice refusal leaves an sms consent in force and an sms refusal a voice consent;
    an sms consent does not permit a call."""
    voice_refused = [consent(NOW - 2 * HOUR, "A", SMS), refusal(NOW - HOUR, "A", VOICE)]
    assert outcome(decide(commercial("A", SMS), voice_refused, NOW)) == DELIVER
    assert outcome(decide(commercial("A", VOICE), voice_refused, NOW)) == REFUSED
    sms_refused = [consent(NOW - 2 * HOUR, "A", VOICE), refusal(NOW - HOUR, "A", SMS)]
    assert outcome(decide(commercial("A", VOICE), sms_refused, NOW)) == DELIVER
    assert outcome(decide(commercial("A", SMS), sms_refused, NOW)) == REFUSED
    sms_only = [consent(NOW - HOUR, "A", SMS)]
    assert outcome(decide(commercial("A", VOICE), sms_only, NOW)) == NO_CONSENT


def test_voice_consent_after_voice_refusal_delivers() -> None:
    """A call is decided like a message: a voice consent newer than a voice refusal of
    the sender delivers, with the consent as basis."""
    facts = [refusal(NOW - 2 * HOUR, ALL_SENDERS, VOICE), consent(NOW - HOUR, "A", VOICE)]
    decision = decide(commercial("A", VOICE), facts, NOW)
    assert outcome(decision) == DELIVER
    assert decision.basis == facts[1]


@pytest.mark.parametrize("channel", list(Channel))
def test_all_channel_refusal_applies_to_both_channels(channel: Channel) -> None:
    """A refusal with channel None (all channels) refuses email, sms and voice alike."""
    facts = [
        consent(NOW - 2 * HOUR, "A", SMS),
        consent(NOW - 2 * HOUR, "A", EMAIL),
        consent(NOW - 2 * HOUR, "A", VOICE),
        refusal(NOW - HOUR, "A", None),
    ]
    assert outcome(decide(commercial("A", channel), facts, NOW)) == REFUSED


def test_sender_refusal_does_not_block_another_sender() -> None:
    """A refusal scoped to sender A does not block B when B has consent."""
    facts = [consent(NOW - 3 * HOUR, "B"), consent(NOW - 3 * HOUR, "A"), refusal(NOW - HOUR, "A")]
    assert outcome(decide(commercial("B"), facts, NOW)) == DELIVER
    assert outcome(decide(commercial("A"), facts, NOW)) == REFUSED


def test_request_valid_before_expiry_delivers() -> None:
    """A request delivers while its expiry is still in the future."""
    fact = request(NOW - HOUR, NOW + 1)
    assert decide(commercial(), [fact], NOW) == Decision(Action.DELIVER, None, fact)


@pytest.mark.parametrize("expires", [NOW, NOW - 1, NOW - HOUR], ids=["at", "just-after", "long"])
def test_request_at_or_after_expiry_is_no_consent(expires: int) -> None:
    """A request whose expires_ms <= now has expired: no_consent."""
    facts = [request(NOW - 2 * HOUR, expires)]
    assert outcome(decide(commercial(), facts, NOW)) == NO_CONSENT


def test_expired_request_does_not_outrank_refusal() -> None:
    """An expired request newer than a refusal does not re-open the sender."""
    facts = [refusal(NOW - 2 * HOUR), request(NOW - HOUR, NOW - 1)]
    assert outcome(decide(commercial(), facts, NOW)) == REFUSED


def test_expired_request_leaves_older_consent_in_force() -> None:
    """An expired request does not hide an older consent."""
    yes = consent(NOW - 3 * HOUR)
    facts = [yes, request(NOW - HOUR, NOW - 1)]
    assert decide(commercial(), facts, NOW) == Decision(Action.DELIVER, None, yes)


def test_newest_refusal_and_permission_are_compared() -> None:
    """Only the newest refusal and the newest permission decide, whatever came between."""
    facts = [
        refusal(NOW - 5 * HOUR),
        consent(NOW - 4 * HOUR),
        refusal(NOW - 3 * HOUR, ALL_SENDERS, None),
        request(NOW - 2 * HOUR, NOW + HOUR),
    ]
    decision = decide(commercial(), facts, NOW)
    assert decision == Decision(Action.DELIVER, None, facts[3])


def test_facts_may_be_any_iterable() -> None:
    """decide() reads the facts once, so a generator works like a list."""
    facts = [consent(NOW - 2 * HOUR), refusal(NOW - HOUR)]
    assert outcome(decide(commercial(), (f for f in facts), NOW)) == REFUSED


def test_registry_unavailable_defers_when_fail_closed() -> None:
    """Registry unreadable (facts None), fail closed: defer, registry_unavailable."""
    decision = decide(commercial(), None, NOW, FailMode.CLOSED)
    assert decision.action is Action.DEFER
    assert decision.reason is Reason.REGISTRY_UNAVAILABLE
    assert decision.basis is None


def test_fail_closed_is_the_default() -> None:
    """Without a fail mode, an unreadable registry defers (never delivers unverified)."""
    assert decide(commercial(), None, NOW).action is Action.DEFER


def test_registry_unavailable_delivers_when_fail_open() -> None:
    """Registry unreadable, fail open: deliver."""
    decision = decide(commercial(), None, NOW, FailMode.OPEN)
    assert decision.action is Action.DELIVER
    assert decision.basis is None


def test_empty_facts_are_not_an_outage() -> None:
    """An empty fact list is 'nothing on record', not 'registry unavailable'."""
    assert outcome(decide(commercial(), [], NOW, FailMode.OPEN)) == NO_CONSENT


# --- properties -------------------------------------------------------------------------

SENDERS = ("A", "B")
TIMES = st.integers(min_value=NOW - 10, max_value=NOW + 10)  # narrow: many ties


@st.composite
def facts_strategy(draw: st.DrawFn) -> Fact:
    """Any valid fact about senders A/B (refusals may also be global or all-channel)."""
    kind = draw(st.sampled_from(list(Kind)))
    at = draw(TIMES)
    if kind is Kind.REFUSAL:
        sender = draw(st.sampled_from((*SENDERS, ALL_SENDERS)))
        return refusal(at, sender, draw(st.sampled_from([None, *Channel])))
    sender = draw(st.sampled_from(SENDERS))
    channel = draw(st.sampled_from(list(Channel)))
    if kind is Kind.CONSENT:
        return consent(at, sender, channel)
    return request(at, draw(TIMES), sender, channel)


FACT_LISTS = st.lists(facts_strategy(), max_size=8)
SUBMISSIONS = st.builds(commercial, st.sampled_from(SENDERS), st.sampled_from(list(Channel)))


def applies(fact: Fact, submission: Submission) -> bool:
    """Scope and channel match, written independently of Fact.applies_to."""
    scope = fact.sender in {submission.sender, ALL_SENDERS}
    return scope and fact.channel in (None, submission.channel)


def permits(fact: Fact, now: int) -> bool:
    if fact.kind is Kind.CONSENT:
        return True
    return fact.kind is Kind.REQUEST and fact.expires_ms is not None and fact.expires_ms > now


@given(SUBMISSIONS, FACT_LISTS, TIMES)
@settings(max_examples=250)
def test_deliver_only_with_permission_and_no_newer_refusal(
    submission: Submission, facts: list[Fact], now: int
) -> None:
    """DELIVER only if a consent/valid request applies and no applicable refusal is as new."""
    decision = decide(submission, facts, now)
    mine = [f for f in facts if applies(f, submission)]
    yes = [f.at_ms for f in mine if permits(f, now)]
    no = [f.at_ms for f in mine if f.kind is Kind.REFUSAL]
    if decision.action is Action.DELIVER:
        assert yes
        assert all(r < max(yes) for r in no)
    else:
        assert decision.action is Action.DROP
        assert not yes or (no and max(no) >= max(yes))


@given(SUBMISSIONS, FACT_LISTS, TIMES)
@settings(max_examples=250)
def test_decision_matches_the_spec_table(
    submission: Submission, facts: list[Fact], now: int
) -> None:
    """The outcome and its basis follow SPEC §1 steps 1-5 exactly."""
    mine = [f for f in facts if applies(f, submission)]
    no = max((f.at_ms for f in mine if f.kind is Kind.REFUSAL), default=None)
    yes = max((f.at_ms for f in mine if permits(f, now)), default=None)
    decision = decide(submission, facts, now)
    if no is not None and (yes is None or no >= yes):
        assert outcome(decision) == REFUSED
        assert decision.basis is not None
        assert decision.basis.kind is Kind.REFUSAL
        assert decision.basis.at_ms == no
    elif yes is not None:
        assert outcome(decision) == DELIVER
        assert decision.basis is not None
        assert permits(decision.basis, now)
        assert decision.basis.at_ms == yes
    else:
        assert decision == Decision(Action.DROP, Reason.NO_CONSENT)
    if decision.basis is not None:
        assert decision.basis in mine


@given(SUBMISSIONS, FACT_LISTS, st.data())
@settings(max_examples=200)
def test_newer_applicable_refusal_always_drops_refused(
    submission: Submission, facts: list[Fact], data: st.DataObject
) -> None:
    """Adding a refusal newer than every fact, covering the message, drops it: refused."""
    latest = max((f.at_ms for f in facts), default=NOW)
    at = latest + data.draw(st.integers(min_value=1, max_value=HOUR))
    scope = data.draw(st.sampled_from([submission.sender, ALL_SENDERS]))
    channel = data.draw(st.sampled_from([submission.channel, None]))
    no = refusal(at, scope, channel)
    position = data.draw(st.integers(min_value=0, max_value=len(facts)))
    with_refusal = [*facts[:position], no, *facts[position:]]
    assert decide(submission, with_refusal, NOW) == Decision(Action.DROP, Reason.REFUSED, no)


@given(SUBMISSIONS, FACT_LISTS, TIMES, st.data())
@settings(max_examples=200)
def test_order_of_facts_does_not_change_the_decision(
    submission: Submission, facts: list[Fact], now: int, data: st.DataObject
) -> None:
    """Shuffling the facts gives the same action, reason and basis time."""
    shuffled = data.draw(st.permutations(facts))
    first, second = decide(submission, facts, now), decide(submission, shuffled, now)
    assert outcome(first) == outcome(second)
    first_at = first.basis.at_ms if first.basis else None
    second_at = second.basis.at_ms if second.basis else None
    assert first_at == second_at
