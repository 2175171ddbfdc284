"""filterctl's commands: an invocation (validated arguments, the registry work) and
the table that maps each command name to what it runs."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from filterd.bootstrap import Runtime, build, token_keys
from filterd.cli.exits import EXIT_DROP, EXIT_OK
from filterd.cli.importing import import_file, validate_import
from filterd.cli.render import audit_document, audit_line, fact_document, fact_line
from filterd.errors import ConfigError, RegistryUnavailable, UsageError
from filterd.identity import ConsumerHasher, consumer_hex
from filterd.model import (
    ALL_SENDERS,
    Action,
    Address,
    Channel,
    FactRequest,
    Kind,
    MessageClass,
    Reason,
    WriteResult,
)
from filterd.normalize import fits, mask, normalize
from filterd.secret import load_or_create
from filterd.settings import Settings
from filterd.storage.port import AuditQuery
from filterd.units import parse_duration


class Invocation:
    """One filterctl invocation: validated arguments, then the registry work."""

    def __init__(
        self,
        args: argparse.Namespace,
        settings: Settings,
        out: TextIO,
        err: TextIO,
        *,
        log_level: str = "WARNING",
    ) -> None:
        self.args = args
        self.settings = settings
        self.out = out
        self.err = err
        self.log_level = log_level
        """FILTERD_LOG_LEVEL, for the processes of a parallel import."""
        self.region = settings.registry.default_region
        self.address: Address | None = None

    def validate(self) -> None:
        """Check every argument before the registry is touched (bad input writes nothing)."""
        a = self.args
        raw = getattr(a, "address", None) or getattr(a, "to", None)
        if raw is not None:
            self.address = normalize(raw, self.region)
            channel = getattr(a, "channel", None)
            if channel is not None and channel != "all":
                if not fits(self.address, Channel(channel)):
                    raise UsageError(f"--channel {channel} does not fit the address {raw!r}")
                self.address = Address(self.address.canonical, Channel(channel))
        for name in ("ttl", "since"):
            value = getattr(a, name, None)
            if value is not None:
                try:
                    parse_duration(value)
                except ValueError as exc:
                    raise UsageError(f"--{name}: {exc}") from None
        if getattr(a, "limit", 1) < 1:
            raise UsageError(f"--limit: {a.limit} must be at least 1")
        if a.command == "import":
            validate_import(a)
        for name in ("sender",):
            value = getattr(a, name, None)
            if value is not None and (not value.strip() or value == ALL_SENDERS):
                raise UsageError(f"--sender {value!r} is not a sender name")

    async def execute(self) -> int:
        """Open the registry, run the command, release the registry."""
        if self.args.command == "unsubscribe-url":
            return self.unsubscribe_url()  # needs the secret only, not the registry
        runtime = await asyncio.to_thread(build, self.settings)
        try:
            return await COMMANDS[self.args.command](self, runtime)
        finally:
            await runtime.close()

    def emit(self, document: object, text: str) -> None:
        """Print the result: JSON with --json, else text."""
        if self.args.json:
            self.out.write(json.dumps(document, ensure_ascii=False) + "\n")
        elif text:
            self.out.write(text + "\n")

    # ---- facts -------------------------------------------------------------

    async def _record(self, runtime: Runtime, kind: Kind) -> int:
        a = self.args
        address = self._address()
        sender = ALL_SENDERS if getattr(a, "all_senders", False) else a.sender
        channel: Channel | None = address.channel
        if a.channel == "all":
            channel = None
        elif a.channel:
            channel = Channel(a.channel)
        request = FactRequest(
            address=address,
            kind=kind,
            sender=sender,
            channel=channel,
            source=a.source,
            evidence=a.evidence,
            ttl_s=parse_duration(a.ttl) if getattr(a, "ttl", None) else None,
        )
        result = await runtime.service.record(request, origin="cli")
        if result is WriteResult.REFUSAL_ON_RECORD:
            raise UsageError(
                f"{mask(address.canonical)} has a refusal on record; "
                f"a {kind.value} needs --evidence (nothing written)"
            )
        consumer = consumer_hex(runtime.service.hasher.consumer_id(address))
        channel_text = channel.value if channel else "all"
        self.emit(
            {
                "result": result.value,
                "fact": kind.value,
                "sender": sender,
                "channel": channel_text,
                "consumer": consumer,
            },
            f"{result.value}: {kind.value} {mask(address.canonical)} "
            f"sender={sender} channel={channel_text}",
        )
        return EXIT_OK

    async def consent(self, runtime: Runtime) -> int:
        """filterctl consent."""
        return await self._record(runtime, Kind.CONSENT)

    async def request(self, runtime: Runtime) -> int:
        """filterctl request."""
        return await self._record(runtime, Kind.REQUEST)

    async def refuse(self, runtime: Runtime) -> int:
        """filterctl refuse."""
        return await self._record(runtime, Kind.REFUSAL)

    def _address(self) -> Address:
        if self.address is None:
            raise UsageError("an address is required")
        return self.address

    def unsubscribe_url(self) -> int:
        """filterctl unsubscribe-url: the bare URL (no registry needed)."""
        http = self.settings.http
        if http is None:
            raise ConfigError("http", "unsubscribe-url needs [http] public_url")
        sender = self.args.sender
        if sender not in self.settings.senders():
            raise UsageError(
                f"--sender {sender!r} is not a configured sender (smtp/smpp/cmpp accounts, numbers)"
            )
        address = self._address()
        secret = load_or_create(self.settings.registry.secret_file)
        keys = token_keys(self.settings, secret)
        if keys is None:  # [http] is set, so there are keys
            raise ConfigError("http", "no token keys")
        consumer = ConsumerHasher(secret).consumer_id(address)
        token = keys.issue(sender, address.channel, consumer, int(time.time()))
        url = f"{http.public_url}/unsubscribe/{token}"
        self.emit({"url": url, "sender": sender, "channel": address.channel.value}, url)
        return EXIT_OK

    # ---- reads -------------------------------------------------------------

    async def status(self, runtime: Runtime) -> int:
        """filterctl status."""
        address = self._address()
        facts = await runtime.registry.facts(runtime.service.hasher.consumer_id(address))
        sender = self.args.sender
        if sender is not None:
            facts = [f for f in facts if f.sender in (sender, ALL_SENDERS)]
        self.emit(
            [fact_document(f) for f in facts],
            "\n".join(fact_line(f) for f in facts)
            or f"no facts on record for {mask(address.canonical)}",
        )
        return EXIT_OK

    async def check(self, runtime: Runtime) -> int:
        """filterctl check."""
        address = self._address()
        message_class = MessageClass(self.args.message_class)
        [decision] = await runtime.service.judge(self.args.sender, message_class, [address])
        if decision.action is Action.DEFER and decision.reason is Reason.REGISTRY_UNAVAILABLE:
            raise RegistryUnavailable("the consent registry could not be read")
        consumer = runtime.service.hasher.consumer_id(address)
        basis = decision.basis
        if basis is not None:  # lookup() leaves evidence and message id out: read them
            stored = await runtime.registry.facts(consumer)
            key = (basis.slot, basis.at_ms)
            basis = next((f for f in stored if (f.slot, f.at_ms) == key), basis)
        reason = decision.reason.value if decision.reason else None
        document: dict[str, Any] = {
            "decision": decision.action.value,
            "reason": reason,
            "sender": self.args.sender,
            "channel": address.channel.value,
            "class": message_class.value,
            "basis": fact_document(basis) if basis else None,
        }
        if decision.resume is not None:
            document["resume"] = decision.resume  # quiet hours: when sending may resume
        self.emit(document, decision.action.value + (f" {reason}" if reason else ""))
        return EXIT_OK if decision.action is Action.DELIVER else EXIT_DROP

    async def audit(self, runtime: Runtime) -> int:
        """filterctl audit."""
        a = self.args
        since = 0
        if a.since:
            since = int(time.time() * 1000) - parse_duration(a.since) * 1000
        consumer = None
        if self.address is not None:
            consumer = consumer_hex(runtime.service.hasher.consumer_id(self.address))
        entries = await runtime.registry.read_audit(
            AuditQuery(since_ms=since, limit=a.limit, consumer=consumer, sender=a.sender)
        )
        self.emit([audit_document(e) for e in entries], "\n".join(audit_line(e) for e in entries))
        return EXIT_OK

    async def export(self, runtime: Runtime) -> int:
        """filterctl export: streams rows as they are read."""
        fields = ["consumer", "fact", "sender", "channel", "created_at", "expires_at",
                  "source", "evidence", "message_id"]  # fmt: skip
        if self.args.format == "csv":
            import csv  # noqa: PLC0415 - only this command writes CSV

            writer = csv.writer(self.out, lineterminator="\n")
            writer.writerow(fields)
        async for consumer, fact in runtime.registry.export(self.args.sender):
            doc = {"consumer": consumer_hex(consumer), **fact_document(fact)}
            if self.args.format == "csv":
                writer.writerow(["" if doc[f] is None else doc[f] for f in fields])
            else:
                self.out.write(json.dumps(doc, ensure_ascii=False) + "\n")
        return EXIT_OK

    async def stats(self, runtime: Runtime) -> int:
        """filterctl stats."""
        stats = await runtime.registry.stats()
        self.emit(stats, "\n".join(f"{k}: {v}" for k, v in stats.items()))
        return EXIT_OK

    # ---- import ------------------------------------------------------------


COMMANDS: dict[str, Callable[[Invocation, Runtime], Awaitable[int]]] = {
    "consent": Invocation.consent,
    "request": Invocation.request,
    "refuse": Invocation.refuse,
    "status": Invocation.status,
    "check": Invocation.check,
    "audit": Invocation.audit,
    "export": Invocation.export,
    "stats": Invocation.stats,
    "import": import_file,
}
"""What each command runs once the registry is open (unsubscribe-url needs none)."""
