"""The CMPP message header, command ids, versions and limits (filterd/cmpp/header.py)."""

from __future__ import annotations

import pytest

from filterd.cmpp.encode import encode
from filterd.cmpp.header import (
    ACTIVE_TEST,
    ACTIVE_TEST_RESP,
    CONNECT,
    CONNECT_RESP,
    DELIVER,
    DELIVER_RESP,
    HEADER,
    HEADER_LENGTH,
    MAX_LENGTH,
    RESPONSE_BIT,
    SUBMIT,
    SUBMIT_RESP,
    TERMINATE,
    TERMINATE_RESP,
    V20,
    V30,
    check_version,
)
from filterd.cmpp.pdu import Submit


def test_header_is_three_big_endian_words() -> None:
    """The header is Total_Length, Command_Id and Sequence_Id as three big-endian 32-bit
    words: 12 octets."""
    assert HEADER.size == HEADER_LENGTH == 12
    assert HEADER.pack(12, ACTIVE_TEST, 258) == bytes.fromhex("0000000c 00000008 00000102")


def test_command_ids() -> None:
    """The requests have their CMPP values; each response is its request with bit 31 set."""
    assert (CONNECT, TERMINATE, SUBMIT, DELIVER, ACTIVE_TEST) == (1, 2, 4, 5, 8)
    for request, response in [
        (CONNECT, CONNECT_RESP),
        (TERMINATE, TERMINATE_RESP),
        (SUBMIT, SUBMIT_RESP),
        (DELIVER, DELIVER_RESP),
        (ACTIVE_TEST, ACTIVE_TEST_RESP),
    ]:
        assert response == request | RESPONSE_BIT == request + 0x80000000


def test_max_length_holds_the_largest_valid_message() -> None:
    """The framer's default cap is above the largest valid message, a 3.0 SUBMIT with 100
    destinations, 255 octets of content and every string full (3,618 octets)."""
    largest = Submit(
        1,
        service_id="s" * 10,
        fee_terminal_id="f" * 32,
        msg_src="m" * 6,
        fee_type="t" * 2,
        fee_code="c" * 6,
        valid_time="v" * 17,
        at_time="a" * 17,
        src_id="s" * 21,
        dest_terminal_ids=("d" * 32,) * 100,
        msg_content=bytes(255),
        link_id="l" * 20,
    )
    assert len(encode(largest, V30)) == 3618 < MAX_LENGTH


def test_versions() -> None:
    """Only 0x20 and 0x30 have layouts; any other version is refused naming it."""
    check_version(V20)
    check_version(V30)
    with pytest.raises(ValueError, match="0x21"):
        check_version(0x21)
