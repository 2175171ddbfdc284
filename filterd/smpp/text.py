"""SMS text: data_coding, GSM 03.38, UCS2, user data headers and concatenation (pure).

Decoding follows SMPP 3.4 §5.2.19 for data_coding 0x00-0x0F and the GSM 03.38
(3GPP TS 23.038 §4) data coding scheme groups above:

- 0 = SMSC default alphabet, read as GSM 03.38 default alphabet septets, one
  per octet (unpacked, as SMPP carries them), with the 0x1B escape table;
  1 = IA5 (ASCII); 3 = Latin-1; 6 = ISO-8859-5; 7 = ISO-8859-8;
  8 = UCS2, read as UTF-16BE (no BOM; surrogate pairs accepted);
  2, 4 = binary; other SMPP values (JIS, KS C 5601, pictograms) are not decoded.
- 0x10-0x1F, 0x40-0x5F (general / automatic-deletion groups, uncompressed):
  bits 3-2 give the alphabet (00 GSM, 01 8-bit data, 10 UCS2, 11 reserved),
  bit 4 says bits 1-0 are a message class. Compressed groups (0x20-0x3F,
  0x60-0x7F) and the reserved 0x80-0xBF are not decoded.
- 0xC0-0xDF message waiting, GSM; 0xE0-0xEF message waiting, UCS2.
- 0xF0-0xFF: bit 2 chooses GSM (0xF0-0xF3, 0xF8-0xFB) or 8-bit data, bits 1-0
  the class (so 0xF1 is GSM class 1 and 0xF5 is 8-bit class 1).

`decode_text` returns None for codings that are not text (the relay treats the
message as opaque) and raises `SmsTextError` for text that is malformed for its
coding (odd-length UCS2, a lone surrogate, a GSM or IA5 octet over 0x7F, an
octet ISO-8859-8 leaves undefined).

Concatenation: the 8-bit (IE 0x00) and 16-bit (IE 0x08, a 2-octet reference)
UDH elements are found anywhere in the UDH, and the SAR optional parameters
give the same (reference, total, sequence) triple; the UDH wins when both are
present. An element with total 0, sequence 0 or sequence > total is ignored
(TS 23.040 §9.2.3.24.1). All parts of one message share a `ConcatKey`
(source, destination, reference, total), whichever scheme carried it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from filterd.errors import FilterdError
from filterd.smpp.fields import ESM_UDHI
from filterd.smpp.pdu import DataSm, DeliverSm, SubmitSm


class SmsTextError(FilterdError, ValueError):
    """Text that cannot be decoded or encoded as its coding says (the reason in the message)."""


# -- GSM 03.38 -------------------------------------------------------------------------

GSM_ESCAPE = 0x1B
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""The default alphabet: septet value → character (0x1B is the escape)."""
GSM_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}
"""The extension table, reached by 0x1B: septet value → character."""

_GSM_ENCODE: dict[str, bytes] = {
    char: bytes([code]) for code, char in enumerate(GSM_BASIC) if code != GSM_ESCAPE
}
_GSM_ENCODE.update({char: bytes([GSM_ESCAPE, code]) for code, char in GSM_EXTENSION.items()})

GSM_SINGLE_SEPTETS = 160
GSM_PART_SEPTETS = 153
UCS2_SINGLE_OCTETS = 140
UCS2_PART_OCTETS = 134
MAX_PARTS = 255

DATA_CODING_GSM = 0x00
DATA_CODING_UCS2 = 0x08


def decode_gsm(data: bytes) -> str:
    """GSM 03.38 unpacked septets → text.

    An escape followed by a code outside the extension table reads as the
    default-table character (TS 23.038 §6.2.1.1); a trailing escape, or an
    escape followed by another, reads as a space. Octets over 0x7F raise
    SmsTextError.
    """
    out = []
    i = 0
    while i < len(data):
        code = data[i]
        if code > 0x7F:
            raise SmsTextError(f"octet {code:#04x} at {i} is not a GSM 03.38 septet")
        if code != GSM_ESCAPE:
            out.append(GSM_BASIC[code])
            i += 1
            continue
        if i + 1 >= len(data) or data[i + 1] == GSM_ESCAPE:
            out.append(" ")
            i += 2
            continue
        nxt = data[i + 1]
        if nxt > 0x7F:
            raise SmsTextError(f"octet {nxt:#04x} at {i + 1} is not a GSM 03.38 septet")
        out.append(GSM_EXTENSION.get(nxt, GSM_BASIC[nxt]))
        i += 2
    return "".join(out)


def gsm_septets(text: str) -> int | None:
    """How many septets `text` takes in the GSM alphabet, or None when it cannot be encoded."""
    total = 0
    for char in text:
        code = _GSM_ENCODE.get(char)
        if code is None:
            return None
        total += len(code)
    return total


def encode_gsm(text: str) -> bytes:
    """Text → GSM 03.38 unpacked septets; SmsTextError for a character outside the alphabet."""
    try:
        return b"".join(_GSM_ENCODE[char] for char in text)
    except KeyError as error:
        raise SmsTextError(f"{error.args[0]!r} is not in the GSM 03.38 alphabet") from None


def decode_ucs2(data: bytes) -> str:
    """UCS2 / UTF-16BE (no BOM) → text; odd length or a lone surrogate raise SmsTextError."""
    if len(data) % 2:
        raise SmsTextError(f"UCS2 text of odd length {len(data)}")
    try:
        return data.decode("utf-16-be")
    except UnicodeDecodeError as error:
        raise SmsTextError(f"bad UTF-16: {error.reason} at {error.start}") from None


# -- data_coding -----------------------------------------------------------------------


class Alphabet(enum.Enum):
    """How the user data of a message is written."""

    GSM = "gsm"
    ASCII = "ascii"
    """IA5: 7-bit."""
    LATIN1 = "latin-1"
    CYRILLIC = "iso8859-5"
    HEBREW = "iso8859-8"
    UCS2 = "ucs2"
    BINARY = "binary"
    """8-bit data, or a coding this module does not read: not text."""


@dataclass(frozen=True, slots=True)
class Coding:
    """A data_coding value read: the alphabet and the message class (0-3, or None)."""

    alphabet: Alphabet
    message_class: int | None = None


_SMPP_CODINGS = {
    0x00: Alphabet.GSM,
    0x01: Alphabet.ASCII,
    0x03: Alphabet.LATIN1,
    0x06: Alphabet.CYRILLIC,
    0x07: Alphabet.HEBREW,
    0x08: Alphabet.UCS2,
}
_DCS_ALPHABETS = (Alphabet.GSM, Alphabet.BINARY, Alphabet.UCS2, Alphabet.BINARY)


def coding_of(data_coding: int) -> Coding:
    """The alphabet and message class of a data_coding value (see the module docstring)."""
    if not 0 <= data_coding <= 0xFF:
        raise ValueError(f"data_coding {data_coding} does not fit one octet")
    group = data_coding >> 4
    message_class: int | None = None
    if data_coding <= 0x0F:
        alphabet = _SMPP_CODINGS.get(data_coding, Alphabet.BINARY)
    elif group <= 0x7 and not data_coding & 0x20:  # general / auto-deletion, uncompressed
        alphabet = _DCS_ALPHABETS[(data_coding >> 2) & 0x03]
        message_class = data_coding & 0x03 if data_coding & 0x10 else None
    elif group in (0xC, 0xD):  # message waiting: discard / store, GSM
        alphabet = Alphabet.GSM
    elif group == 0xE:  # message waiting: store, UCS2
        alphabet = Alphabet.UCS2
    elif group == 0xF:  # data coding / message class
        alphabet = Alphabet.BINARY if data_coding & 0x04 else Alphabet.GSM
        message_class = data_coding & 0x03
    else:  # compressed, or reserved groups 0x8-0xB
        alphabet = Alphabet.BINARY
    return Coding(alphabet, message_class)


def decode_text(data_coding: int, data: bytes) -> str | None:
    """User data (without UDH) → text; None when the coding is not text.

    Raises SmsTextError when the bytes are malformed for their coding.
    """
    alphabet = coding_of(data_coding).alphabet
    if alphabet is Alphabet.BINARY:
        return None
    if alphabet is Alphabet.GSM:
        return decode_gsm(data)
    if alphabet is Alphabet.UCS2:
        return decode_ucs2(data)
    try:
        return data.decode(alphabet.value)
    except UnicodeDecodeError as error:
        octet = data[error.start]
        raise SmsTextError(f"octet {octet:#04x} at {error.start} is not {alphabet.name}") from None


def encode_text(text: str) -> tuple[int, bytes]:
    """(data_coding, bytes): GSM 03.38 (0) when every character fits, else UCS2 (8)."""
    if gsm_septets(text) is not None:
        return DATA_CODING_GSM, encode_gsm(text)
    return DATA_CODING_UCS2, text.encode("utf-16-be")


@dataclass(frozen=True, slots=True)
class SmsParts:
    """A text ready to submit: data_coding, esm_class and one short_message per part."""

    data_coding: int
    esm_class: int
    messages: tuple[bytes, ...]


def split_sms(text: str, reference: int) -> SmsParts:
    """Encode `text` (GSM when it fits, else UCS2) as one message or concatenated parts.

    One part holds 160 GSM septets or 140 UCS2 octets. Longer text is cut into
    parts of 153 septets / 134 octets, each led by the UDH 05 00 03 ref total
    seq and sent with esm_class UDHI. A GSM escape pair or a UTF-16 surrogate
    pair is never split. `reference` is 0-255 (the caller chooses it).
    More than 255 parts raise ValueError.
    """
    if not 0 <= reference <= 0xFF:
        raise ValueError(f"reference {reference} does not fit one octet")
    data_coding, data = encode_text(text)
    if data_coding == DATA_CODING_GSM:
        if len(data) <= GSM_SINGLE_SEPTETS:
            return SmsParts(data_coding, 0, (data,))
        chunks = _chunks(data, GSM_PART_SEPTETS, ucs2=False)
    else:
        if len(data) <= UCS2_SINGLE_OCTETS:
            return SmsParts(data_coding, 0, (data,))
        chunks = _chunks(data, UCS2_PART_OCTETS, ucs2=True)
    if len(chunks) > MAX_PARTS:
        raise ValueError(f"text needs {len(chunks)} parts (at most {MAX_PARTS})")
    total = len(chunks)
    messages = tuple(
        bytes([0x05, 0x00, 0x03, reference, total, seq]) + chunk
        for seq, chunk in enumerate(chunks, start=1)
    )
    return SmsParts(data_coding, ESM_UDHI, messages)


SMS_OCTETS = 140
"""The user data of one SMS (TS 23.040 §9.2.3.16), the UDH included."""


def user_data_limit(data_coding: int, udh_octets: int = 0) -> int:
    """How much text one SMS holds after a UDH of `udh_octets` octets (its length octet included).

    In the units SMPP carries text in: GSM septets, one per octet, as
    (140 - udh_octets) * 8 // 7 (160 without a UDH; the UDH and its fill bits up
    to a septet boundary counted as TS 23.040 §9.2.3.24 does: 153 after
    05 00 03 ref total seq, 152 after 06 08 04 ...); UCS2 octets, 140 - udh_octets
    rounded down to even; any other coding, 140 - udh_octets octets.
    """
    room = SMS_OCTETS - udh_octets
    alphabet = coding_of(data_coding).alphabet
    if alphabet is Alphabet.GSM:
        return room * 8 // 7
    if alphabet is Alphabet.UCS2:
        return room - room % 2
    return room


def sms_count(data_coding: int, data: bytes) -> int:
    """How many SMS a whole message's user data (no UDH) takes when cut as split_sms cuts.

    GSM: one SMS up to 160 septets, else parts of 153 (an escape pair never
    split); UCS2: 140 octets, else parts of 134 (a surrogate pair never split);
    other codings: 140 octets, else parts of 134. Empty data is one SMS.
    """
    alphabet = coding_of(data_coding).alphabet
    gsm = alphabet is Alphabet.GSM
    single, part = (
        (GSM_SINGLE_SEPTETS, GSM_PART_SEPTETS) if gsm else (UCS2_SINGLE_OCTETS, UCS2_PART_OCTETS)
    )
    if len(data) <= single:
        return 1
    if gsm or alphabet is Alphabet.UCS2:
        return len(_chunks(data, part, ucs2=not gsm))
    return -(-len(data) // part)


def _chunks(data: bytes, size: int, *, ucs2: bool) -> list[bytes]:
    """`data` in pieces of at most `size`; a cut that would split a pair moves back.

    GSM: a cut right after an escape octet. UCS2: a cut right after a high surrogate.
    """
    out = []
    pos = 0
    while pos < len(data):
        cut = min(pos + size, len(data))
        if cut < len(data):
            if ucs2 and 0xD8 <= data[cut - 2] <= 0xDB:
                cut -= 2
            elif not ucs2 and data[cut - 1] == GSM_ESCAPE:
                cut -= 1
        out.append(data[pos:cut])
        pos = cut
    return out


# -- user data header and concatenation ------------------------------------------------

Udh = tuple[tuple[int, bytes], ...]
"""The information elements of a UDH: (IEI, data) in order."""


def parse_udh(data: bytes) -> tuple[Udh, bytes]:
    """(information elements, user data after the UDH) of a message sent with UDHI.

    The first octet is the UDH length. SmsTextError when the UDH runs past the
    message or an element runs past the UDH.
    """
    if not data:
        raise SmsTextError("UDHI set but the message is empty")
    end = 1 + data[0]
    if end > len(data):
        raise SmsTextError(f"UDH length {data[0]} runs past the {len(data)}-octet message")
    elements = []
    pos = 1
    while pos < end:
        if pos + 2 > end:
            raise SmsTextError("UDH element header runs past the UDH")
        iei, length = data[pos], data[pos + 1]
        if pos + 2 + length > end:
            raise SmsTextError(f"UDH element {iei:#04x} runs past the UDH")
        elements.append((iei, data[pos + 2 : pos + 2 + length]))
        pos += 2 + length
    return tuple(elements), data[end:]


def split_udh(esm_class: int, data: bytes) -> tuple[Udh, bytes]:
    """(UDH elements, user data): the UDH parsed when esm_class has UDHI, else ((), data)."""
    if esm_class & ESM_UDHI:
        return parse_udh(data)
    return (), data


def cut_udh(esm_class: int, data: bytes) -> tuple[bytes | None, bytes]:
    """(the UDH as sent, its length octet included, or None without UDHI; the user data after it).

    SmsTextError when the UDH is malformed (as parse_udh).
    """
    if not esm_class & ESM_UDHI:
        return None, data
    parse_udh(data)
    end = 1 + data[0]
    return data[:end], data[end:]


@dataclass(frozen=True, slots=True)
class Concat:
    """One part of a concatenated message: its reference, the number of parts, its number."""

    reference: int
    total: int
    sequence: int


def _valid(reference: int, total: int, sequence: int) -> Concat | None:
    """A Concat, or None for total 0, sequence 0 or sequence > total (TS 23.040)."""
    if total == 0 or not 1 <= sequence <= total:
        return None
    return Concat(reference, total, sequence)


def concat_from_udh(elements: Udh) -> Concat | None:
    """The first valid concatenation element (IEI 0x00 8-bit or 0x08 16-bit reference)."""
    for iei, value in elements:
        if iei == 0x00 and len(value) == 3:
            found = _valid(value[0], value[1], value[2])
        elif iei == 0x08 and len(value) == 4:
            found = _valid(int.from_bytes(value[:2], "big"), value[2], value[3])
        else:
            continue
        if found is not None:
            return found
    return None


Message = SubmitSm | DeliverSm | DataSm
"""A PDU that carries user data."""


def concat_of(pdu: Message) -> Concat | None:
    """The concatenation of a message part from its UDH, else its SAR TLVs; None if single.

    A damaged UDH counts as no UDH here (the part is then judged on its own).
    """
    if pdu.esm_class & ESM_UDHI:
        try:
            elements, _ = parse_udh(pdu.payload)
        except SmsTextError:
            elements = ()
        found = concat_from_udh(elements)
        if found is not None:
            return found
    sar = pdu.sar()
    return _valid(*sar) if sar is not None else None


class ConcatKey(NamedTuple):
    """What every part of one concatenated message shares."""

    source: str
    destination: str
    reference: int
    total: int


def concat_key(pdu: Message) -> ConcatKey | None:
    """The key shared by all parts of the message this PDU belongs to; None for a single PDU."""
    concat = concat_of(pdu)
    if concat is None:
        return None
    return ConcatKey(pdu.source_addr, pdu.destination_addr, concat.reference, concat.total)


def message_text(pdu: Message) -> str | None:
    """The text of a message (UDH removed), or None when its coding is not text.

    SmsTextError when the UDH or the text is malformed.
    """
    _, data = split_udh(pdu.esm_class, pdu.payload)
    return decode_text(pdu.data_coding, data)
