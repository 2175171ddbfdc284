"""SMS compliance text: the sender's signature and cancel instruction (pure).

SPEC §7 for SMS: the text of all parts together, after NFKC and case-folding,
must start or end with the sender's `signature` and contain its
`sms_cancel_text`; under `cancel_method = "add"` a missing instruction is
appended to the message's last part when it still fits. This module answers
the two checks on the whole text and builds the appended last part; which
check applies, the refusals (statuses, CMPP Results, audit reasons) and
rewriting the PDU are the relay's.

Checks (`signature_ok`, `has_cancel_text`): both sides go through `fold`
(NFKC, case-fold, NFKC again), so a full-width ACME (U+FF21 U+FF23 U+FF2D
U+FF25) matches `Acme` and `Reply STOP` matches `reply stop`. The signature
must lead or end the text, whitespace around the text and around the
signature ignored; an empty signature or cancel text asks for nothing.

Appending (`append_cancel_text`) writes the cancel text as configured (not
folded):

- separator: one space after GSM 03.38 and 8-bit text (IA5, Latin-1,
  ISO-8859-5/-8), none after UCS2. The separator follows the part's coding as
  sent, so a GSM text re-encoded as UCS2 still gets its space.
- re-encoding: a GSM or 8-bit part whose appended text the coding cannot hold
  is rewritten as UCS2 when the whole part then fits. The data_coding keeps
  what else it says: SMPP values 0x00-0x0F become 0x08; the general and
  automatic-deletion groups (0x10-0x7F) keep their class and deletion bits
  with the UCS2 alphabet (0x11 → 0x19, 0x40 → 0x48); GSM class n of group 0xF
  (0xF0-0xF3, 0xF8-0xFB) becomes UCS2 class n of the general group (0x18 + n);
  message waiting "store" (0xD0-0xDF) becomes its UCS2 form (0xE0-0xEF, same
  indication bits). Message waiting "discard" (0xC0-0xCF) has no UCS2 form:
  None.
- concatenated messages: the last part of a message that has other parts keeps
  its data_coding. TS 23.040 lets each part carry its own DCS, but handsets and
  reassembling SMSCs that assume one coding per message show such a message
  garbled; a refusal the sender can fix (write the instruction into the text,
  or send the message in UCS2) beats a message that may arrive broken. A UCS2
  last part also has half the room, so it would rarely fit anyway.
- a GSM part whose UDH selects a national language shift table (IE 0x24/0x25)
  gets None: the default-alphabet octets filterd would append could read as
  other characters there.
- a coding that is not text (8-bit data, compressed, reserved): None.

Limits, counted in the units SMPP carries (`text.user_data_limit`):

- a part with a UDH is one SMS, the UDH (length octet included) counted: 140
  octets of user data, so GSM (140 - udh) * 8 // 7 septets, an escape-table
  character being two; UCS2 140 - udh octets rounded down to even; 8-bit
  140 - udh octets. This holds in short_message and in message_payload alike.
- a part of a message concatenated by SAR TLVs (other parts, no UDH) is one
  SMS whose UDH the SMSC adds: counted as the 16-bit reference element (7
  octets: 152 septets, 132 UCS2 octets, 133 8-bit octets), the longer of the
  two concatenation elements an SMSC may choose.
- a whole message in one PDU (no UDH, no other parts), in short_message or in
  message_payload, is cut into SMS by the SMSC when it is long: the cancel text
  is appended when the number of SMS does not grow, counted as
  `text.sms_count` cuts (160/153 septets, 140/134 octets), and the field still
  holds it (short_message 254 octets, message_payload 65,535). For a text that
  fits one SMS this is the single-SMS limit above; a long message_payload text
  gets the instruction when its last SMS has room, never an extra SMS.

Malformed input raises `SmsTextError`: bytes not valid for their coding, a UCS2
part of odd length, a UDH whose length octet does not match its bytes.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import NamedTuple

from filterd.smpp.text import (
    DATA_CODING_UCS2,
    Alphabet,
    SmsTextError,
    coding_of,
    decode_text,
    encode_gsm,
    gsm_septets,
    parse_udh,
    sms_count,
    user_data_limit,
)

SAR_UDH_OCTETS = 7
"""The UDH an SMSC adds to a SAR part, counted at its largest: 06 08 04 ref ref total seq."""
SHORT_MESSAGE_OCTETS = 254
"""The most short_message holds (sm_length, SMPP 3.4 §5.2.21)."""
MESSAGE_PAYLOAD_OCTETS = 0xFFFF
"""The most message_payload holds (a TLV's 2-octet length)."""
NATIONAL_SHIFT_IEIS = frozenset({0x24, 0x25})
"""UDH elements that select a national language single / locking shift table (TS 23.040)."""


def fold(text: str) -> str:
    """`text` as the checks compare it: NFKC, case-folded, NFKC again."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def signature_ok(text: str, signature: str) -> bool:
    """Whether the whole text starts or ends with the signature (folded, outer spaces ignored)."""
    return signature_in(fold(text), signature)


def has_cancel_text(text: str, cancel_text: str) -> bool:
    """Whether the whole text contains the cancel text (both folded)."""
    return cancel_text_in(fold(text), cancel_text)


def signature_in(folded: str, signature: str) -> bool:
    """signature_ok on a text already folded (a message's text is folded once for
    both checks; the configured strings once per process)."""
    body, wanted = folded.strip(), _folded_rule(signature)
    return body.startswith(wanted) or body.endswith(wanted)


def cancel_text_in(folded: str, cancel_text: str) -> bool:
    """has_cancel_text on a text already folded."""
    return _folded_rule(cancel_text) in folded


@functools.lru_cache(maxsize=256)
def _folded_rule(rule: str) -> str:
    """A configured signature or cancel text, folded, outer spaces removed."""
    return fold(rule).strip()


class Appended(NamedTuple):
    """The last part with the cancel text: its data_coding and user data (after any UDH)."""

    data_coding: int
    payload: bytes


def append_cancel_text(
    data_coding: int,
    udh: bytes | None,
    payload: bytes,
    cancel_text: str,
    *,
    concatenated: bool,
    in_message_payload: bool = False,
) -> Appended | None:
    """The last part with `cancel_text` appended, or None when it cannot be added.

    `udh` is the part's UDH as sent (its length octet first) or None without
    UDHI; `payload` the user data after it; `concatenated` whether the message
    has other parts; `in_message_payload` whether the user data travels in
    message_payload rather than short_message. The part to send is
    `udh + result.payload` with `result.data_coding`. None when the text does
    not fit, the coding is not text, or the coding cannot change (see the
    module docstring). SmsTextError for malformed input; ValueError for an
    empty cancel text.
    """
    if not cancel_text:
        raise ValueError("empty cancel text")
    alphabet = coding_of(data_coding).alphabet
    elements = _udh_elements(udh)
    if alphabet is Alphabet.BINARY:
        return None
    if alphabet is Alphabet.UCS2:
        if len(payload) % 2:
            raise SmsTextError(f"UCS2 text of odd length {len(payload)}")
        result: Appended | None = Appended(data_coding, payload + cancel_text.encode("utf-16-be"))
    elif alphabet is Alphabet.GSM and NATIONAL_SHIFT_IEIS & {iei for iei, _ in elements}:
        return None
    else:
        result = _with_text(data_coding, alphabet, payload, cancel_text, concatenated=concatenated)
    original = Appended(data_coding, payload)
    if result is None or not _fits(result, original, udh, concatenated, in_message_payload):
        return None
    return result


def _with_text(
    data_coding: int, alphabet: Alphabet, payload: bytes, cancel_text: str, *, concatenated: bool
) -> Appended | None:
    """A GSM or 8-bit part + one space + the cancel text: in its coding, else UCS2, else None.

    GSM is written from the decoded text: a part in canonical septets comes back
    byte for byte; odd escapes come back in their canonical form (same reading).
    """
    text = f"{decode_text(data_coding, payload)} {cancel_text}"
    if alphabet is Alphabet.GSM:
        if gsm_septets(text) is not None:
            return Appended(data_coding, encode_gsm(text))
    else:
        try:
            return Appended(data_coding, text.encode(alphabet.value))
        except UnicodeEncodeError:
            pass
    ucs2 = None if concatenated else _ucs2_coding(data_coding)
    return None if ucs2 is None else Appended(ucs2, text.encode("utf-16-be"))


def _ucs2_coding(data_coding: int) -> int | None:
    """The UCS2 data_coding saying what GSM / 8-bit `data_coding` says otherwise, or None.

    See the module docstring for the mapping.
    """
    group = data_coding >> 4
    if data_coding <= 0x0F:
        return DATA_CODING_UCS2
    if group <= 0x7:  # general / automatic deletion: alphabet bits 3-2 = 10
        return (data_coding & ~0x0C) | 0x08
    if group == 0xD:  # message waiting, store: GSM -> UCS2
        return 0xE0 | (data_coding & 0x0F)
    if group == 0xF:  # data coding / message class: the class, in the general group
        return 0x18 | (data_coding & 0x03)
    return None  # message waiting, discard: no UCS2 form


def _udh_elements(udh: bytes | None) -> tuple[tuple[int, bytes], ...]:
    """The elements of a UDH given as sent; SmsTextError unless its length octet matches."""
    if udh is None:
        return ()
    elements, rest = parse_udh(udh)
    if rest:
        raise SmsTextError(f"UDH length {udh[0]} leaves {len(rest)} octets of the UDH given")
    return elements


def _fits(
    new: Appended,
    original: Appended,
    udh: bytes | None,
    concatenated: bool,
    in_message_payload: bool,
) -> bool:
    """Whether the appended part is within its limits (see the module docstring)."""
    if udh is not None or concatenated:
        udh_octets = len(udh) if udh is not None else SAR_UDH_OCTETS
        return len(new.payload) <= user_data_limit(new.data_coding, udh_octets)
    field = MESSAGE_PAYLOAD_OCTETS if in_message_payload else SHORT_MESSAGE_OCTETS
    if len(new.payload) > field:
        return False
    return sms_count(*new) <= sms_count(*original)
