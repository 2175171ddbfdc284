"""Shared by the tests of the CMPP codec (tests/test_cmpp_*.py): wire bytes written by
hand from the protocol's layouts with the values they hold, Hypothesis strategies for
every message in each version, and the fuzz invariant's check."""

from __future__ import annotations

import struct

from hypothesis import strategies as st

from filterd.cmpp.decode import CmppProtocolError
from filterd.cmpp.encode import encode
from filterd.cmpp.header import V20, V30
from filterd.cmpp.pdu import (
    ActiveTest,
    ActiveTestResp,
    Connect,
    ConnectResp,
    Deliver,
    DeliverResp,
    Pdu,
    Submit,
    SubmitResp,
    Terminate,
    TerminateResp,
)


def wire(*parts: str | bytes) -> bytes:
    """Hex text (spaces ignored) and raw octets, joined."""
    return b"".join(p if isinstance(p, bytes) else bytes.fromhex(p) for p in parts)


def pad(text: str, size: int) -> bytes:
    """An ASCII string NUL-padded to `size` octets, as CMPP writes fixed-width strings."""
    raw = text.encode("ascii")
    assert len(raw) <= size
    return raw + bytes(size - len(raw))


MSG_ID = 0xC3C050CDC0720001
"""December 7th, 16:05:03, gateway 901234, sequence 1 (worked out bit by bit in
tests/test_cmpp_msgid.py)."""
MSG_ID_HEX = "c3c050cdc0720001"
AUTH = bytes(range(0x10, 0x20))
"""A stand-in authenticator (16 octets) where only the layout matters."""

# -- CONNECT and its responses ---------------------------------------------------------------

CONNECT_WIRE = wire(
    "00000027 00000001 00000011",  # Total_Length 39, CMPP_CONNECT, Sequence_Id 17
    pad("901234", 6),  # Source_Addr
    AUTH,  # AuthenticatorSource
    "30",  # Version 3.0
    "47f3cd25",  # Timestamp 1207160101 (December 7th, 16:01:01)
)
CONNECT = Connect(17, "901234", AUTH, V30, 1207160101)

CONNECT_RESP_20_WIRE = wire(
    "0000001e 80000001 00000011",  # 30 octets, CMPP_CONNECT_RESP, Sequence_Id 17
    "03",  # Status 3 (one octet in 2.0)
    AUTH,  # AuthenticatorISMG
    "20",  # Version 2.0
)
CONNECT_RESP_20 = ConnectResp(17, status=3, authenticator_ismg=AUTH, version=V20)

CONNECT_RESP_30_WIRE = wire(
    "00000021 80000001 00000011",  # 33 octets
    "00000000",  # Status 0 (four octets in 3.0)
    AUTH,
    "30",
)
CONNECT_RESP_30 = ConnectResp(17, status=0, authenticator_ismg=AUTH, version=V30)

# -- SUBMIT ---------------------------------------------------------------------------------

SUBMIT_20_WIRE = wire(
    "000000b8 00000004 00000102",  # Total_Length 184, CMPP_SUBMIT, Sequence_Id 258
    "0000000000000000",  # Msg_Id (the ISMG sets it)
    "01 01 01 00",  # Pk_total, Pk_number, Registered_Delivery, Msg_level
    pad("MI", 10),  # Service_Id
    "02",  # Fee_UserType
    pad("", 21),  # Fee_terminal_Id (21 in 2.0, no Fee_terminal_type)
    "00 00 0f",  # TP_pId, TP_udhi, Msg_Fmt 15 (GBK)
    pad("900001", 6),  # Msg_src
    pad("01", 2),  # FeeType
    pad("10", 6),  # FeeCode
    pad("", 17),  # ValId_Time
    pad("", 17),  # At_Time
    pad("10690001", 21),  # Src_Id
    "02",  # DestUsr_tl
    pad("13800138000", 21),  # Dest_terminal_Id x 2, 21 octets each
    pad("13900139000", 21),
    "04 c4e3 bac3",  # Msg_Length 4, "你好" in GBK
    bytes(8),  # Reserve
)
SUBMIT_20 = Submit(
    258,
    registered_delivery=1,
    service_id="MI",
    fee_usertype=2,
    msg_fmt=15,
    msg_src="900001",
    fee_type="01",
    fee_code="10",
    src_id="10690001",
    dest_terminal_ids=("13800138000", "13900139000"),
    msg_content="你好".encode("gbk"),
)

SUBMIT_30_WIRE = wire(
    "000000ed 00000004 00000103",  # Total_Length 237, CMPP_SUBMIT, Sequence_Id 259
    "0000000000000000",  # Msg_Id
    "02 01 00 01",  # Pk_total 2, Pk_number 1, Registered_Delivery 0, Msg_level 1
    pad("MI", 10),  # Service_Id
    "03",  # Fee_UserType
    pad("13800138000", 32),  # Fee_terminal_Id (32 in 3.0)
    "01",  # Fee_terminal_type (3.0 only)
    "00 01 08",  # TP_pId, TP_udhi 1, Msg_Fmt 8 (UCS2)
    pad("900001", 6),  # Msg_src
    pad("02", 2),  # FeeType
    pad("000100", 6),  # FeeCode
    pad("261208120000000+", 17),  # ValId_Time
    pad("", 17),  # At_Time
    pad("10690001", 21),  # Src_Id
    "02",  # DestUsr_tl
    pad("8613800138000", 32),  # Dest_terminal_Id x 2, 32 octets each
    pad("8613900139000", 32),
    "00",  # Dest_terminal_type (3.0 only)
    "0a 050003a70201 9000 8ba2",  # Msg_Length 10: UDH part 1 of 2, ref 0xA7, then "退订"
    pad("LINK01", 20),  # LinkID (3.0 only)
)
SUBMIT_30 = Submit(
    259,
    pk_total=2,
    msg_level=1,
    service_id="MI",
    fee_usertype=3,
    fee_terminal_id="13800138000",
    fee_terminal_type=1,
    tp_udhi=1,
    msg_fmt=8,
    msg_src="900001",
    fee_type="02",
    fee_code="000100",
    valid_time="261208120000000+",
    src_id="10690001",
    dest_terminal_ids=("8613800138000", "8613900139000"),
    msg_content=bytes.fromhex("050003a70201") + "退订".encode("utf-16-be"),
    link_id="LINK01",
)

SUBMIT_RESP_20_WIRE = wire("00000015 80000004 00000102", MSG_ID_HEX, "41")  # Result 65
SUBMIT_RESP_20 = SubmitResp(258, msg_id=MSG_ID, result=65)
SUBMIT_RESP_30_WIRE = wire("00000018 80000004 00000103", MSG_ID_HEX, "00000040")  # 64
SUBMIT_RESP_30 = SubmitResp(259, msg_id=MSG_ID, result=64)

# -- DELIVER ----------------------------------------------------------------------------------

DELIVER_MO_20_WIRE = wire(
    "00000056 00000005 00000007",  # Total_Length 86, CMPP_DELIVER, Sequence_Id 7
    MSG_ID_HEX,  # Msg_Id
    pad("106900011", 21),  # Dest_Id: the service number with extension 1
    pad("", 10),  # Service_Id
    "00 00 00",  # TP_pid, TP_udhi, Msg_Fmt 0 (ASCII)
    pad("13800138000", 21),  # Src_terminal_Id (21 in 2.0, no type)
    "00",  # Registered_Delivery 0: an MO message
    "01 54",  # Msg_Length 1, "T"
    bytes(8),  # Reserve
)
DELIVER_MO_20 = Deliver(
    7, msg_id=MSG_ID, dest_id="106900011", src_terminal_id="13800138000", msg_content=b"T"
)

REPORT_30_CONTENT = wire(
    MSG_ID_HEX,  # Msg_Id of the SUBMIT_RESP reported on
    pad("DELIVRD", 7),  # Stat
    pad("2612071605", 10),  # Submit_time YYMMDDHHMM
    pad("2612071606", 10),  # Done_time
    pad("8613800138000", 32),  # Dest_terminal_Id (32 in 3.0)
    "00000007",  # SMSC_sequence
)
DELIVER_REPORT_30_WIRE = wire(
    "000000b4 00000005 00000008",  # Total_Length 180, CMPP_DELIVER, Sequence_Id 8
    "0000000000000063",  # Msg_Id of this DELIVER (99)
    pad("10690001", 21),  # Dest_Id
    pad("MI", 10),  # Service_Id
    "00 00 00",  # TP_pid, TP_udhi, Msg_Fmt
    pad("8613800138000", 32),  # Src_terminal_Id (32 in 3.0)
    "00",  # Src_terminal_type (3.0 only)
    "01",  # Registered_Delivery 1: a status report
    "47",  # Msg_Length 71
    REPORT_30_CONTENT,
    pad("", 20),  # LinkID
)
DELIVER_REPORT_30 = Deliver(
    8,
    msg_id=99,
    dest_id="10690001",
    service_id="MI",
    src_terminal_id="8613800138000",
    registered_delivery=1,
    msg_content=REPORT_30_CONTENT,
)

DELIVER_RESP_20_WIRE = wire("00000015 80000005 00000007", MSG_ID_HEX, "08")  # Result 8
DELIVER_RESP_20 = DeliverResp(7, msg_id=MSG_ID, result=8)
DELIVER_RESP_30_WIRE = wire("00000018 80000005 00000008", "0000000000000063", "00000000")
DELIVER_RESP_30 = DeliverResp(8, msg_id=99, result=0)

# -- ACTIVE_TEST and TERMINATE (one layout in both versions) ----------------------------------

ACTIVE_TEST_WIRE = wire("0000000c 00000008 0000002a")
ACTIVE_TEST_RESP_WIRE = wire("0000000d 80000008 0000002a", "00")  # Reserved
TERMINATE_WIRE = wire("0000000c 00000002 0000002b")
TERMINATE_RESP_WIRE = wire("0000000c 80000002 0000002b")

HAND_WRITTEN: list[tuple[str, int, bytes, Pdu]] = [
    ("connect 2.0", V20, CONNECT_WIRE, CONNECT),
    ("connect 3.0", V30, CONNECT_WIRE, CONNECT),
    ("connect_resp 2.0", V20, CONNECT_RESP_20_WIRE, CONNECT_RESP_20),
    ("connect_resp 3.0", V30, CONNECT_RESP_30_WIRE, CONNECT_RESP_30),
    ("submit 2.0", V20, SUBMIT_20_WIRE, SUBMIT_20),
    ("submit 3.0", V30, SUBMIT_30_WIRE, SUBMIT_30),
    ("submit_resp 2.0", V20, SUBMIT_RESP_20_WIRE, SUBMIT_RESP_20),
    ("submit_resp 3.0", V30, SUBMIT_RESP_30_WIRE, SUBMIT_RESP_30),
    ("deliver MO 2.0", V20, DELIVER_MO_20_WIRE, DELIVER_MO_20),
    ("deliver report 3.0", V30, DELIVER_REPORT_30_WIRE, DELIVER_REPORT_30),
    ("deliver_resp 2.0", V20, DELIVER_RESP_20_WIRE, DELIVER_RESP_20),
    ("deliver_resp 3.0", V30, DELIVER_RESP_30_WIRE, DELIVER_RESP_30),
    ("active_test", V20, ACTIVE_TEST_WIRE, ActiveTest(42)),
    ("active_test_resp", V30, ACTIVE_TEST_RESP_WIRE, ActiveTestResp(42)),
    ("terminate", V30, TERMINATE_WIRE, Terminate(43)),
    ("terminate_resp", V20, TERMINATE_RESP_WIRE, TerminateResp(43)),
]
"""(name, version, wire bytes, the message they hold)."""

# -- strategies ---------------------------------------------------------------------------------

U8 = st.integers(min_value=0, max_value=0xFF)
U32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


def text(size: int) -> st.SearchStrategy[str]:
    """Any value of a fixed-width string field of `size` octets (Latin-1, no NUL)."""
    return st.text(st.characters(min_codepoint=1, max_codepoint=0xFF), max_size=size)


def messages(version: int) -> st.SearchStrategy[Pdu]:
    """Any message `version` can carry (fields it lacks left at their defaults)."""
    v30 = version == V30
    width = 32 if v30 else 21
    result = U32 if v30 else U8
    only30 = U8 if v30 else st.just(0)
    link_id = text(20) if v30 else st.just("")
    return st.one_of(
        st.builds(Connect, U32, text(6), st.binary(min_size=16, max_size=16), U8, U32),
        st.builds(ConnectResp, U32, result, st.binary(min_size=16, max_size=16), U8),
        st.builds(
            Submit,
            U32,
            msg_id=U64,
            pk_total=U8,
            pk_number=U8,
            registered_delivery=U8,
            msg_level=U8,
            service_id=text(10),
            fee_usertype=U8,
            fee_terminal_id=text(width),
            fee_terminal_type=only30,
            tp_pid=U8,
            tp_udhi=U8,
            msg_fmt=U8,
            msg_src=text(6),
            fee_type=text(2),
            fee_code=text(6),
            valid_time=text(17),
            at_time=text(17),
            src_id=text(21),
            dest_terminal_ids=st.lists(text(width), min_size=1, max_size=100).map(tuple),
            dest_terminal_type=only30,
            msg_content=st.binary(max_size=255),
            link_id=link_id,
        ),
        st.builds(SubmitResp, U32, msg_id=U64, result=result),
        st.builds(
            Deliver,
            U32,
            msg_id=U64,
            dest_id=text(21),
            service_id=text(10),
            tp_pid=U8,
            tp_udhi=U8,
            msg_fmt=U8,
            src_terminal_id=text(width),
            src_terminal_type=only30,
            registered_delivery=U8,
            msg_content=st.binary(max_size=255),
            link_id=link_id,
        ),
        st.builds(DeliverResp, U32, msg_id=U64, result=result),
        st.builds(ActiveTest, U32),
        st.builds(ActiveTestResp, U32),
        st.builds(Terminate, U32),
        st.builds(TerminateResp, U32),
    )


COMMAND_IDS = st.sampled_from(
    [0x1, 0x2, 0x4, 0x5, 0x8, 0x80000001, 0x80000002, 0x80000004, 0x80000005, 0x80000008]
)


def frame(command_id: int, body: bytes, seq: int = 1) -> bytes:
    """A message with a correct header around `body`."""
    return struct.pack(">III", 12 + len(body), command_id, seq) + body


@st.composite
def fuzz_frames(draw: st.DrawFn) -> bytes:
    """A frame with a correct header: a known command id (mostly) and a random body,
    often cut from a valid message so that the decoder gets deep into the layout."""
    command_id = draw(st.one_of(COMMAND_IDS, U32))
    if draw(st.booleans()):
        body = draw(st.binary(max_size=300))
    else:
        version = draw(st.sampled_from([V20, V30]))
        whole = encode(draw(messages(version)), version)[12:]
        cut = draw(st.integers(min_value=0, max_value=len(whole)))
        body = whole[:cut] + draw(st.binary(max_size=4))
    return frame(command_id, body, draw(U32))


def check_error(error: CmppProtocolError) -> None:
    """A decoding error carries a reason and a Result that fits one octet."""
    assert error.reason
    assert 0 <= error.result <= 0xFF
