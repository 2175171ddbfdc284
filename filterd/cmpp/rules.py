"""SPEC §7 for CMPP: a commercial message's signature and cancel instruction, judged on
the text of all its parts (pure).

What applies to a sender is SMPP's (`filterd.smpp.compliance.SmsRules`), and so are
the checks (`filterd.smpp.cancel`: NFKC, case-folded; the signature at the start or
the end, the cancel text anywhere). `judge(parts, rules)` takes every CMPP_SUBMIT of
one message in part order (a single submit is a one-part message) and answers:

- refused `no_signature` when a signature is configured and the text of the parts
  together does not start or end with it;
- otherwise, with a cancel text: kept when the text contains it; under "add" the
  last part rewritten with the text appended; refused `no_cancel_method` under
  "require", or when it does not fit;
- kept otherwise.

Appending follows the SMS rules by Msg_Fmt: ASCII (0) as SMPP's IA5 — one space,
then the text, rewritten as UCS2 (Msg_Fmt 8) when the instruction is not ASCII and
the part is the whole message; UCS2 (8) with no space; GBK (15) with no space, the
instruction written in GBK. A CMPP_SUBMIT is one SMS: the part, its UDH included,
must stay within 140 octets (and, without a UDH, within one SMS's characters).
The last part of a message that has other parts keeps its Msg_Fmt.

A message whose Msg_Fmt is not text (binary, card write, other values) or whose
UDH or text is malformed has no text to check: refused as it cannot carry what
the rules ask for (`SmsRules.unchecked`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from filterd.cmpp.pdu import Submit
from filterd.cmpp.text import MSG_FMT_ASCII, MSG_FMT_GBK, MSG_FMT_UCS2, message_text, split_udh
from filterd.model import Reason
from filterd.smpp.cancel import append_cancel_text, cancel_text_in, fold, signature_in
from filterd.smpp.compliance import SmsRules
from filterd.smpp.text import SmsTextError

SMS_OCTETS = 140
"""The user data of one SMS: a CMPP_SUBMIT's Msg_Content, UDH included, at most."""
_DATA_CODING = {MSG_FMT_ASCII: 0x01, MSG_FMT_UCS2: 0x08}
"""The SMPP data_coding of the same alphabet (IA5, UCS2), for SMPP's append rules."""
_MSG_FMT = {code: fmt for fmt, code in _DATA_CODING.items()}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What becomes of a message: refused for a reason, or sent (its last part replaced)."""

    refused: Reason | None = None
    """`no_signature` or `no_cancel_method`; None: send it."""
    last: Submit | None = None
    """The last part with the cancel text appended; None: every part as received."""


KEEP = Verdict()


def judge(parts: Sequence[Submit], rules: SmsRules) -> Verdict:
    """The verdict on one message, all its `parts` in part order (at least one)."""
    try:
        text = message_text(parts)
    except SmsTextError:
        text = None
    if text is None:
        return Verdict(rules.unchecked)
    folded = fold(text)
    if rules.signature is not None and not signature_in(folded, rules.signature):
        return Verdict(Reason.NO_SIGNATURE)
    if rules.cancel_text is None or cancel_text_in(folded, rules.cancel_text):
        return KEEP
    if not rules.add:
        return Verdict(Reason.NO_CANCEL_METHOD)
    last = with_cancel_text(parts[-1], rules.cancel_text, concatenated=len(parts) > 1)
    return Verdict(Reason.NO_CANCEL_METHOD) if last is None else Verdict(last=last)


def with_cancel_text(part: Submit, cancel_text: str, *, concatenated: bool) -> Submit | None:
    """`part` with `cancel_text` appended (its Msg_Fmt changed if need be), or None when it
    does not fit one SMS, its format cannot hold it, or the part is malformed."""
    try:
        udh, data = split_udh(part.tp_udhi, part.msg_content)
        if part.msg_fmt == MSG_FMT_GBK:
            msg_fmt, appended = MSG_FMT_GBK, data + cancel_text.encode("gbk")
        elif part.msg_fmt in _DATA_CODING:
            result = append_cancel_text(
                _DATA_CODING[part.msg_fmt], udh, data, cancel_text, concatenated=concatenated
            )
            if result is None:
                return None
            msg_fmt, appended = _MSG_FMT[result.data_coding], result.payload
        else:
            return None
    except (SmsTextError, UnicodeEncodeError):
        return None
    content = (udh or b"") + appended
    if len(content) > SMS_OCTETS:
        return None
    return dataclasses.replace(part, msg_fmt=msg_fmt, msg_content=content)
