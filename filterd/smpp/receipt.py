"""SMSC delivery receipts (SMPP 3.4 Appendix B): telling a receipt from a message,
reading its text, and putting filterd's message id in place of the carrier's."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TypeVar

from filterd.smpp.fields import ESM_DELIVERY_RECEIPT, ESM_INTERMEDIATE_NOTIFICATION, ESM_TYPE_MASK
from filterd.smpp.pdu import DataSm, DeliverSm
from filterd.smpp.tlv import TAG_MESSAGE_PAYLOAD, TAG_RECEIPTED_MESSAGE_ID, tlv_value, with_tlv

_RECEIPT_KEY = re.compile(
    rb"(?<![^\s])(id|sub|dlvrd|submit[ _]date|done[ _]date|stat|err|text):", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Receipt:
    """The fields of an SMSC delivery receipt text (SMPP 3.4 Appendix B).

    Absent fields are None. `message_id` is the id the SMSC returned in
    submit_sm_resp; `stat` is e.g. DELIVRD, EXPIRED, UNDELIV, REJECTD.
    """

    message_id: str
    stat: str | None = None
    err: str | None = None
    sub: str | None = None
    dlvrd: str | None = None
    submit_date: str | None = None
    done_date: str | None = None
    text: str | None = None


def _receipt_spans(data: bytes) -> dict[str, tuple[int, int]]:
    """Where each receipt field's value lies in `data`, trimmed of spaces; text: the rest."""
    matches = list(_RECEIPT_KEY.finditer(data))
    spans: dict[str, tuple[int, int]] = {}
    for i, match in enumerate(matches):
        key = match.group(1).lower().replace(b" ", b"_").decode()
        start = match.end()
        end = len(data) if key == "text" or i + 1 == len(matches) else matches[i + 1].start()
        if key != "text":
            while start < end and data[start] in b" \t\r\n":
                start += 1
            while end > start and data[end - 1] in b" \t\r\n":
                end -= 1
            if start == end:  # an empty value sits right after the colon
                start = end = match.end()
        spans.setdefault(key, (start, end))
        if key == "text":
            break
    return spans


def parse_receipt(data: bytes) -> Receipt | None:
    """The receipt in a deliver_sm's text, or None when there is no `id:` field.

    The format is "id:IIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done
    date:YYMMDDhhmm stat:DDDDDDD err:E text:...", keys case-insensitive; values
    are read as Latin-1 (receipts are ASCII). Everything after text: is the text.
    """
    spans = _receipt_spans(data)
    if "id" not in spans:
        return None
    values = {key: data[a:b].decode("latin-1") for key, (a, b) in spans.items()}
    return Receipt(
        message_id=values["id"],
        stat=values.get("stat"),
        err=values.get("err"),
        sub=values.get("sub"),
        dlvrd=values.get("dlvrd"),
        submit_date=values.get("submit_date"),
        done_date=values.get("done_date"),
        text=values.get("text"),
    )


def with_receipt_id(data: bytes, message_id: str) -> bytes:
    """The receipt text with its id replaced; every other byte is kept. ValueError if none."""
    span = _receipt_spans(data).get("id")
    if span is None:
        raise ValueError("not a delivery receipt: no id: field")
    return data[: span[0]] + message_id.encode("latin-1") + data[span[1] :]


def is_receipt(pdu: DeliverSm | DataSm) -> bool:
    """True when esm_class marks a delivery receipt or an intermediate notification."""
    kind = pdu.esm_class & ESM_TYPE_MASK
    return kind in (ESM_DELIVERY_RECEIPT, ESM_INTERMEDIATE_NOTIFICATION)


_M = TypeVar("_M", bound=DeliverSm | DataSm)


def rewrite_receipt(pdu: _M, message_id: str) -> _M:
    """The receipt with the carrier's message id replaced by `message_id` everywhere.

    Rewrites the receipted_message_id optional parameter (kept NUL-terminated),
    and the id: field of the receipt text in short_message and in
    message_payload. Parts that are absent or hold no receipt are left alone.
    """
    tlvs = pdu.tlvs
    if tlv_value(tlvs, TAG_RECEIPTED_MESSAGE_ID) is not None:
        tlvs = with_tlv(tlvs, TAG_RECEIPTED_MESSAGE_ID, message_id.encode("latin-1") + b"\x00")
    payload = tlv_value(tlvs, TAG_MESSAGE_PAYLOAD)
    if payload is not None and parse_receipt(payload) is not None:
        tlvs = with_tlv(tlvs, TAG_MESSAGE_PAYLOAD, with_receipt_id(payload, message_id))
    if isinstance(pdu, DeliverSm) and parse_receipt(pdu.short_message) is not None:
        short_message = with_receipt_id(pdu.short_message, message_id)
        return replace(pdu, tlvs=tlvs, short_message=short_message)
    return replace(pdu, tlvs=tlvs)
