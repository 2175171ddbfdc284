"""Shared by the tests of the CMPP relay's client side (tests/test_cmpp_{server,session,
submit}.py): an SP client built on filterd's codec over a real TCP connection, a
CmppRelay in the test's own process linked to the fake ISMG (tests/cmpp_ismg.py), a real
Valkey registry, and facts written into it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from filterd.cmpp.auth import authenticator_source, timestamp_of
from filterd.cmpp.decode import CmppProtocolError
from filterd.cmpp.encode import encode
from filterd.cmpp.framer import Framer
from filterd.cmpp.header import V30
from filterd.cmpp.ismg import IsmgClient
from filterd.cmpp.pdu import Connect, ConnectResp, Pdu, Submit, SubmitResp
from filterd.cmpp.server import CmppRelay
from filterd.compliance import QuietRule
from filterd.identity import ConsumerHasher
from filterd.keywords import Keywords
from filterd.model import Channel, FactRequest, Kind, MessageClass
from filterd.normalize import normalize
from filterd.service import Service
from filterd.settings import (
    CmppAccount,
    CmppNumber,
    CmppSettings,
    CmppUpstream,
    KeywordSettings,
    ListenerLimits,
)
from filterd.storage.redis import RedisRegistry
from tests.cmpp_ismg import FakeIsmg

SECRET = "ef" * 32
SP_ID, SP_SECRET = "900001", "chg-me"
"""A commercial account of sender acme."""
NOTIFY_ID, NOTIFY_SECRET = "900002", "notify-1"
"""A transactional account of sender acme."""
NUMBER = "10690001"
JANE, BOB, CAROL = "13800138000", "13800138001", "13800138002"
"""National Chinese mobile numbers (the relay reads them in region CN)."""
ACCOUNTS = (
    CmppAccount(SP_ID, SP_SECRET, "acme", MessageClass.COMMERCIAL),
    CmppAccount(NOTIFY_ID, NOTIFY_SECRET, "acme", MessageClass.TRANSACTIONAL),
)


def settings(ismg: FakeIsmg | None, version: int = V30, **options: Any) -> CmppSettings:
    """[cmpp] on a free loopback port with the two accounts, linked to `ismg` (if any)."""
    upstream = None
    if ismg is not None:
        upstream = CmppUpstream("127.0.0.1", ismg.port, ismg.sp_id, ismg.secret, version)
    return CmppSettings(
        listen=("127.0.0.1", 0),
        upstream=upstream,
        accounts=ACCOUNTS,
        numbers=(CmppNumber(NUMBER, "acme"),),
        **options,
    )


def limits(idle_s: float = 120.0, total: int = 1000, per_address: int = 100) -> ListenerLimits:
    """Listener limits for a test."""
    return ListenerLimits(idle_s, total, per_address)


class CmppClient:
    """An SP platform: one TCP connection speaking CMPP through filterd's codec."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.version = V30
        self.framer = Framer(V30)
        self.received: list[Pdu] = []
        """Requests from the server (DELIVER, ACTIVE_TEST, TERMINATE) read so far."""
        self.answers: dict[int, SubmitResp] = {}
        """CMPP_SUBMIT_RESP read while waiting for another, by Sequence_Id."""
        self._sequence = itertools.count(1)

    @classmethod
    async def open(cls, port: int) -> CmppClient:
        """Connect to the relay on `port`."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def sequence(self) -> int:
        """The next Sequence_Id."""
        return next(self._sequence)

    async def connect(
        self, sp_id: str = SP_ID, secret: str = SP_SECRET, version: int = V30
    ) -> ConnectResp:
        """Send CMPP_CONNECT; its answer (the session then speaks `version`)."""
        self.version = version
        self.framer.version = version
        self.send(connect_pdu(self.sequence(), sp_id, secret, version))
        answer = await self.read()
        assert isinstance(answer, ConnectResp), answer
        return answer

    def send(self, pdu: Pdu) -> None:
        """Write one message in the session's version."""
        self.writer.write(encode(pdu, self.version))

    async def read(self, wait_s: float = 30) -> Pdu | None:
        """The next message from the server; None once it has closed the connection."""
        while True:
            try:
                pdu = self.framer.next_pdu()
            except CmppProtocolError as exc:
                raise AssertionError(f"the relay sent a bad message: {exc.reason}") from exc
            if pdu is not None:
                return pdu
            try:
                data = await asyncio.wait_for(self.reader.read(65536), wait_s)
            except ConnectionError:
                return None
            if not data:
                return None
            self.framer.feed(data)

    async def answer(self, sequence_id: int, wait_s: float = 30) -> SubmitResp:
        """Read until the CMPP_SUBMIT_RESP of `sequence_id` (requests and other answers read
        on the way are kept in `received` and `answers`)."""
        while sequence_id not in self.answers:
            pdu = await self.read(wait_s)
            assert pdu is not None, "the relay closed the connection"
            if isinstance(pdu, SubmitResp):
                self.answers[pdu.sequence_id] = pdu
            elif not pdu.is_response:
                self.received.append(pdu)
        return self.answers.pop(sequence_id)

    async def submit(self, *destinations: str, text: bytes = b"hello", **fields: Any) -> SubmitResp:
        """One CMPP_SUBMIT of `text` (ASCII) from NUMBER to `destinations`; its answer."""
        pdu = submit_pdu(self.sequence(), destinations, text, **fields)
        self.send(pdu)
        return await self.answer(pdu.sequence_id)

    async def closed(self, wait_s: float = 30) -> bool:
        """True once the server has closed the connection (what else it sends is read)."""
        while (pdu := await self.read(wait_s)) is not None:
            self.received.append(pdu)
        return True

    async def close(self) -> None:
        """Close the connection."""
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def connect_pdu(sequence_id: int, sp_id: str, secret: str, version: int) -> Connect:
    """A CMPP_CONNECT stamped now, asking for any `version` (0x31 included)."""
    timestamp = timestamp_of(datetime.now())
    source = authenticator_source(sp_id, secret, timestamp)
    return Connect(sequence_id, sp_id, source, version, timestamp)


def submit_pdu(
    sequence_id: int, destinations: tuple[str, ...], text: bytes = b"hello", **fields: Any
) -> Submit:
    """A CMPP_SUBMIT of `text` from NUMBER to `destinations`."""
    values: dict[str, Any] = {
        "msg_src": SP_ID,
        "src_id": NUMBER,
        "service_id": "MKT",
        "fee_type": "01",
        "dest_terminal_ids": destinations,
        "msg_content": text,
    }
    values.update(fields)
    return Submit(sequence_id, **values)


@contextlib.asynccontextmanager
async def in_process_relay(
    cmpp: CmppSettings, registry_url: str, **options: Any
) -> AsyncIterator[tuple[CmppRelay, int]]:
    """A CmppRelay of this process on 127.0.0.1 (OS port), over the registry at
        `registry_url` (`options`: CmppRelay's keyword arguments; the quiet hours of its
    `compliance` apply), logged in to its ISMG when
        it has one; its port. At the end: clients terminated, the ISMG link stopped, audit
        entries written."""
    registry = RedisRegistry.from_url(registry_url)
    quiet = QuietRule.of(options.get("compliance"))
    hasher = ConsumerHasher(bytes.fromhex(SECRET))
    service = Service(registry, hasher, request_ttl_s=3600, quiet=quiet)
    kw = KeywordSettings()
    keywords = Keywords.from_lists(kw.opt_out, kw.opt_in, kw.help)
    relay = CmppRelay(cmpp, service, registry, keywords, default_region="CN", **options)
    stop = asyncio.Event()
    link = None
    if cmpp.upstream is not None:
        relay.carrier = IsmgClient(cmpp.upstream, relay.from_ismg)
        link = asyncio.create_task(relay.carrier.run(stop))
        await asyncio.wait_for(relay.carrier.wait_connected(), 30)
    server = await relay.start()
    try:
        yield relay, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await relay.close_all()
        stop.set()
        if link is not None:
            await asyncio.wait_for(link, 30)
        await service.close()
        await registry.close()


async def record(registry_url: str, number: str, kind: Kind, sender: str = "acme") -> None:
    """Write a fact (sms) for the Chinese number `number` into the registry."""
    await record_all(registry_url, [number], kind, sender)


async def record_all(
    registry_url: str, numbers: list[str], kind: Kind, sender: str = "acme"
) -> None:
    """Write a fact (sms) for each Chinese number of `numbers`, 50 at a time."""
    registry = RedisRegistry.from_url(registry_url)
    service = Service(registry, ConsumerHasher(bytes.fromhex(SECRET)), request_ttl_s=3600)
    requests = [
        FactRequest(normalize("+86" + number), kind, sender, Channel.SMS, "test")
        for number in numbers
    ]
    for start in range(0, len(requests), 50):
        batch = requests[start : start + 50]
        await asyncio.gather(*(service.record(request, origin="test") for request in batch))
    await registry.close()
