"""The kinds of CMPP body fields and their sizes (pure).

Every CMPP field has a fixed width except the destination list (DestUsr_tl
then that many terminal ids) and the content (Msg_Length then that many
octets). Fixed-width strings are NUL-padded on the wire and read up to their
first NUL; they are held as `str` decoded as Latin-1, so every octet other than
NUL survives a round trip.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Text:
    """A fixed-width string of `size` octets, NUL-padded (a full-width value has no NUL)."""

    name: str
    size: int


@dataclass(frozen=True, slots=True)
class Uint:
    """A big-endian unsigned integer of `size` octets (1, 4 or 8)."""

    name: str
    size: int


@dataclass(frozen=True, slots=True)
class Raw:
    """Exactly `size` octets held as `bytes` (an authenticator)."""

    name: str
    size: int


@dataclass(frozen=True, slots=True)
class Terminals:
    """DestUsr_tl (one octet, 1 to 100) then that many terminal ids of `size` octets each."""

    name: str
    size: int


@dataclass(frozen=True, slots=True)
class Content:
    """Msg_Length (one octet) then that many octets of Msg_Content."""

    name: str = "msg_content"


@dataclass(frozen=True, slots=True)
class Reserved:
    """`size` octets written as NULs and skipped when read (Reserve in 2.0)."""

    size: int


Field = Text | Uint | Raw | Terminals | Content | Reserved
