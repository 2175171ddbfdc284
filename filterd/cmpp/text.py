"""CMPP message text: Msg_Fmt, the user data header and concatenation (pure).

Msg_Fmt values read as text: 0 ASCII, 8 UCS2 (read as UTF-16BE, surrogate
pairs accepted), 15 GBK (read with GB18030, its superset, so text from phones
that send GB18030 decodes too; written as GBK). 3 (card write), 4 (binary) and
every other value are not text: `decode_text` gives None and the relay treats
the content as opaque. Text malformed for its format (an ASCII octet over
0x7F, odd-length UCS2, a lone surrogate, a GB18030 sequence cut short) raises
`SmsTextError`.

With TP_udhi = 1 the content starts with a user data header (its length octet
first), parsed as SMS does (`filterd.smpp.text.parse_udh`): the 8-bit (IE
0x00) and 16-bit (IE 0x08) concatenation elements give a `Concat` (reference,
total, sequence). A long message may instead number its parts with
Pk_total / Pk_number alone; `parts_of` reads either.
"""

from __future__ import annotations

from collections.abc import Sequence

from filterd.cmpp.pdu import Deliver, Submit
from filterd.smpp.text import Concat, SmsTextError, concat_from_udh, decode_ucs2, parse_udh

MSG_FMT_ASCII = 0
MSG_FMT_CARD_WRITE = 3
MSG_FMT_BINARY = 4
MSG_FMT_UCS2 = 8
MSG_FMT_GBK = 15

Message = Submit | Deliver
"""A message that carries content."""


def decode_text(msg_fmt: int, data: bytes) -> str | None:
    """The text of `data` (no UDH) in `msg_fmt`, or None when the format is not text.

    SmsTextError when the octets are not valid in their format.
    """
    if msg_fmt == MSG_FMT_ASCII:
        try:
            return data.decode("ascii")
        except UnicodeDecodeError as e:
            raise SmsTextError(f"ASCII text with octet {data[e.start]:#04x}") from None
    if msg_fmt == MSG_FMT_UCS2:
        return decode_ucs2(data)
    if msg_fmt == MSG_FMT_GBK:
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError as e:
            raise SmsTextError(f"GBK text invalid at octet {e.start}: {e.reason}") from None
    return None


def encode_text(text: str, msg_fmt: int) -> bytes:
    """`text` in `msg_fmt` (0, 8 or 15); SmsTextError when it cannot be written there."""
    codecs = {MSG_FMT_ASCII: "ascii", MSG_FMT_UCS2: "utf-16-be", MSG_FMT_GBK: "gbk"}
    codec = codecs.get(msg_fmt)
    if codec is None:
        raise SmsTextError(f"Msg_Fmt {msg_fmt} is not a text format")
    try:
        return text.encode(codec)
    except UnicodeEncodeError as e:
        raise SmsTextError(f"{text[e.start]!r} cannot be written in Msg_Fmt {msg_fmt}") from None


def split_udh(tp_udhi: int, content: bytes) -> tuple[bytes | None, bytes]:
    """(the UDH as sent, its length octet first, or None when TP_udhi is 0; the text octets).

    SmsTextError when the UDH runs past the content or an element past the UDH.
    """
    if not tp_udhi:
        return None, content
    parse_udh(content)
    end = 1 + content[0]
    return content[:end], content[end:]


def concat_of(tp_udhi: int, content: bytes) -> Concat | None:
    """The concatenation element of a part's UDH, or None (no UDH, none in it, or a damaged UDH)."""
    if not tp_udhi:
        return None
    try:
        elements, _ = parse_udh(content)
    except SmsTextError:
        return None
    return concat_from_udh(elements)


def parts_of(submit: Submit) -> tuple[int, int] | None:
    """(total, number) of a SUBMIT that is one part of a long message, else None.

    From the UDH's concatenation element when there is one, else from
    Pk_total / Pk_number when Pk_total > 1 and 1 <= Pk_number <= Pk_total.
    """
    concat = concat_of(submit.tp_udhi, submit.msg_content)
    if concat is not None:
        return concat.total, concat.sequence
    if submit.pk_total > 1 and 1 <= submit.pk_number <= submit.pk_total:
        return submit.pk_total, submit.pk_number
    return None


def part_text(pdu: Message) -> str | None:
    """The text of one message (UDH removed), or None when its format is not text.

    SmsTextError when the UDH or the text is malformed.
    """
    _, data = split_udh(pdu.tp_udhi, pdu.msg_content)
    return decode_text(pdu.msg_fmt, data)


def message_text(parts: Sequence[Message]) -> str | None:
    """The text of all parts of one message, in the order given; None when a part is not text.

    Parts in one format have their octets joined before decoding (a UCS2
    surrogate pair or a GBK character cut between two parts reads as one
    character); parts in mixed formats are decoded one by one. SmsTextError
    when a UDH or the text is malformed.
    """
    formats = {part.msg_fmt for part in parts}
    if len(formats) == 1:
        data = b"".join(split_udh(part.tp_udhi, part.msg_content)[1] for part in parts)
        return decode_text(formats.pop(), data)
    texts = [part_text(part) for part in parts]
    if any(text is None for text in texts):
        return None
    return "".join(text for text in texts if text is not None)
