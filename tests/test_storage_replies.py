"""Reading server replies (filterd/storage/replies.py): text and bytes whatever the
client decoded, and a damaged facts value failing closed."""

from __future__ import annotations

import pytest

from filterd.errors import RegistryUnavailable
from filterd.model import ALL_SENDERS, Channel, Fact, Kind
from filterd.storage.records import Record, pack
from filterd.storage.replies import as_bytes, as_text, record_fields_of, records_of, with_side


def test_text_and_bytes_whatever_the_client_decoded() -> None:
    """Bytes and str replies read the same; None is empty text and stays None as bytes;
    undecodable bytes are replaced, not raised."""
    assert as_text(b"acme") == as_text("acme") == "acme"
    assert as_text(None) == ""
    assert as_text(b"\xff") == "\ufffd"
    assert as_bytes("acme") == as_bytes(b"acme") == b"acme"
    assert as_bytes(None) is None


def test_records_of_a_value_and_a_damaged_one() -> None:
    """A packed value gives its records, no value none; a value that is no packed
    record is RegistryUnavailable (fail closed), never a guess."""
    record = Record(Kind.REFUSAL, None, 0, 1000, 1, None)
    assert records_of(pack(record)) == [record]
    assert records_of(None) == []
    assert records_of(b"") == []
    with pytest.raises(RegistryUnavailable, match="damaged registry value"):
        records_of(b"short")


def test_record_fields_of_a_value_and_a_damaged_one() -> None:
    """record_fields_of reads a value as records_of does, as field tuples: none for no
    value, RegistryUnavailable for a damaged one."""
    record = Record(Kind.REQUEST, Channel.VOICE, 7, 1000, 2, 5000)
    assert record_fields_of(pack(record)) == [(Kind.REQUEST, Channel.VOICE, 7, 1000, 2, 5000)]
    assert record_fields_of(None) == []
    with pytest.raises(RegistryUnavailable, match="damaged registry value"):
        record_fields_of(b"short")


def test_with_side_adds_evidence_and_message_id() -> None:
    """with_side keeps every field of the fact and sets its evidence and message id."""
    fact = Fact(Kind.CONSENT, "acme", Channel.SMS, 1000, "form")
    full = with_side(fact, "signed form", "m1")
    assert (full.evidence, full.message_id) == ("signed form", "m1")
    assert (full.kind, full.sender, full.at_ms, full.source) == (Kind.CONSENT, "acme", 1000, "form")
    assert with_side(Fact(Kind.REFUSAL, ALL_SENDERS, None, 1, "t"), None, None).evidence is None
