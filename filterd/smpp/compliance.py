"""SPEC §7 for SMPP: a commercial message's signature and cancel instruction, judged on
the text of all its parts (pure).

`SmsRules.of` reads what applies to a sender: its `[[compliance.senders]]`
signature, and its `sms_cancel_text` unless `cancel_method = "off"`; None when
there is nothing to check (no `[compliance]` table, no table for the sender, or
only a cancel text under "off"). Empty strings ask for nothing.

`judge(parts, rules)` takes every part of one message in sequence order (a
single submit_sm is a one-part message) and answers:

- refused `no_signature` when a signature is configured and the text of the
  parts together does not start or end with it (`filterd.smpp.cancel.fold`:
  NFKC, case-folded);
- otherwise, with a cancel text: kept when the text contains it; under "add"
  the last part rewritten with the text appended
  (`filterd.smpp.cancel.append_cancel_text`: one space after GSM / 8-bit text,
  none after UCS2, GSM re-encoded as UCS2 when the instruction needs it and the
  part still fits; the last part of a multi-part message keeps its coding); refused
  `no_cancel_method` under "require", or when it does not fit;
- kept otherwise.

A message whose coding is not text (8-bit data, compressed, reserved), or whose
UDH or text is malformed for its coding, has no text to check: it cannot carry a
signature (refused `no_signature` when one is configured) nor an instruction
(refused `no_cancel_method` when one is checked, under "add" as under
"require").

The parts' user data is joined before decoding when they share a data_coding
(so a GSM escape or a UTF-16 surrogate pair cut between two parts reads as one
character), else each part is decoded on its own. The rewritten last part keeps
where its user data travelled: short_message, or the message_payload optional
parameter (the UDH, if any, in front as received).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from filterd.model import Reason
from filterd.settings import CancelMethod, ComplianceSettings
from filterd.smpp.cancel import append_cancel_text, cancel_text_in, fold, signature_in
from filterd.smpp.pdu import SubmitSm
from filterd.smpp.text import SmsTextError, cut_udh, decode_text
from filterd.smpp.tlv import TAG_MESSAGE_PAYLOAD, with_tlv


@dataclass(frozen=True, slots=True)
class SmsRules:
    """What a sender's commercial SMS must carry."""

    signature: str | None
    """At the start or the end of the text; None: not checked."""
    cancel_text: str | None
    """Contained in the text; None: not checked ("off", or none configured)."""
    add: bool
    """`cancel_method = "add"`: a missing cancel text is appended when it fits."""

    @classmethod
    def of(cls, compliance: ComplianceSettings | None, sender: str) -> SmsRules | None:
        """The rules for `sender`'s commercial SMS; None when nothing is checked."""
        if compliance is None:
            return None
        own = compliance.rules(sender)
        if own is None:
            return None
        method = compliance.cancel_method
        cancel_text = own.sms_cancel_text if method is not CancelMethod.OFF else None
        if not own.signature and not cancel_text:
            return None
        return cls(own.signature or None, cancel_text or None, method is CancelMethod.ADD)

    @property
    def unchecked(self) -> Reason:
        """The refusal of a message whose text cannot be checked: the first rule it fails."""
        return Reason.NO_SIGNATURE if self.signature else Reason.NO_CANCEL_METHOD


@dataclass(frozen=True, slots=True)
class Verdict:
    """What becomes of a message: refused for a reason, or sent (its last part replaced)."""

    refused: Reason | None = None
    """`no_signature` or `no_cancel_method`; None: send it."""
    last: SubmitSm | None = None
    """The last part with the cancel text appended; None: every part as received."""


KEEP = Verdict()


def judge(parts: Sequence[SubmitSm], rules: SmsRules) -> Verdict:
    """The verdict on one message, all its `parts` in sequence order (at least one)."""
    text = joined_text(parts)
    if text is None:
        return Verdict(rules.unchecked)
    folded = fold(text)  # once for both checks
    if rules.signature is not None and not signature_in(folded, rules.signature):
        return Verdict(Reason.NO_SIGNATURE)
    if rules.cancel_text is None or cancel_text_in(folded, rules.cancel_text):
        return KEEP
    if not rules.add:
        return Verdict(Reason.NO_CANCEL_METHOD)
    last = with_cancel_text(parts[-1], rules.cancel_text, concatenated=len(parts) > 1)
    return Verdict(Reason.NO_CANCEL_METHOD) if last is None else Verdict(last=last)


def joined_text(parts: Sequence[SubmitSm]) -> str | None:
    """The text of the parts together (UDHs removed); None when it is not text or is
    malformed."""
    try:
        data = [cut_udh(part.esm_class, part.payload)[1] for part in parts]
        codings = {part.data_coding for part in parts}
        if len(codings) == 1:
            return decode_text(parts[0].data_coding, b"".join(data))
        texts = [decode_text(part.data_coding, d) for part, d in zip(parts, data, strict=True)]
    except SmsTextError:
        return None
    return None if None in texts else "".join(text for text in texts if text is not None)


def with_cancel_text(part: SubmitSm, cancel_text: str, *, concatenated: bool) -> SubmitSm | None:
    """`part` with `cancel_text` appended (its data_coding changed if need be), or None when
    it does not fit, its coding cannot hold it, or the part is malformed."""
    in_payload = part.message_payload() is not None
    try:
        udh, data = cut_udh(part.esm_class, part.payload)
        appended = append_cancel_text(
            part.data_coding,
            udh,
            data,
            cancel_text,
            concatenated=concatenated,
            in_message_payload=in_payload,
        )
    except SmsTextError:
        return None
    if appended is None:
        return None
    user_data = (udh or b"") + appended.payload
    if in_payload:
        tlvs = with_tlv(part.tlvs, TAG_MESSAGE_PAYLOAD, user_data)
        return dataclasses.replace(part, data_coding=appended.data_coding, tlvs=tlvs)
    return dataclasses.replace(part, data_coding=appended.data_coding, short_message=user_data)
