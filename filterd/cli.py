"""filterctl: the registry admin CLI (SPEC §2).

stdout carries only the command's result (text, or one JSON document with
--json); diagnostics and logs go to stderr. Exit codes: 0 success, 1 a
`check` that drops, 2 bad usage or bad input, 3 registry unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn, TextIO

import filterd
from filterd import config as config_module
from filterd import logs
from filterd.bootstrap import Runtime, build, token_keys
from filterd.bulkimport import (
    ImportJob,
    Outcome,
    default_workers,
    import_lines,
    import_range,
    init_worker,
    new_counter,
    ranges,
)
from filterd.errors import ConfigError, FilterdError, RegistryUnavailable, UsageError
from filterd.identity import ConsumerHasher, consumer_hex
from filterd.model import (
    ALL_SENDERS,
    Action,
    Address,
    AuditEntry,
    Channel,
    Fact,
    FactRequest,
    Kind,
    MessageClass,
    Submission,
    WriteResult,
)
from filterd.normalize import mask, normalize
from filterd.policy import decide
from filterd.secret import load_or_create
from filterd.storage.port import AuditQuery
from filterd.units import parse_duration

EXIT_OK, EXIT_DROP, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141
"""stdout closed early (`filterctl export | head -1`): 128 + SIGPIPE, what a shell
reports for a program ended by a closed pipe; nothing is printed."""
_IMPORT_BATCH = 5000

EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}    success (check: the message would be delivered)
  {EXIT_DROP}    check: the message would be dropped (or deferred)
  {EXIT_USAGE}    bad usage or bad input (an invalid address: nothing is written)
  {EXIT_UNAVAILABLE}    the registry is unreachable
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
  {EXIT_PIPE}  stdout was closed before all of the output was written (e.g. by
       `| head`): the rest is dropped without a message, as a shell reports a
       program ended by SIGPIPE
"""
_ADDRESS_HELP = (
    "a phone number (E.164 like +8613800138000, or national with registry.default_region) "
    "or an email address"
)
_CHANNEL_HELP = "the channel (default: from the address: email for an email address, else sms)"
_SENDER_HELP = "the sender (brand) the fact is about, as the accounts in the config name it"


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line error (its default, made explicit)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"filterctl: {message}\n")


def _version() -> str:
    """The installed package's version (the source tree's when it is not installed)."""
    try:
        return metadata.version("filterd")
    except metadata.PackageNotFoundError:
        return filterd.__version__


_COMMANDS: dict[str, tuple[str, str]] = {
    "consent": (
        "record a consent (同意) to one sender",
        """\
Record that the consumer at ADDRESS consented (同意) to commercial messages from
one sender on one channel. It lets that sender's messages through until a
newer refusal (to that sender or to all senders) stops them.

A consumer with a refusal on record can only be given a consent together with
--evidence (what shows the consumer's newer consent): without it nothing is
written and the exit code is 2. An admin never clears a refusal silently.

examples:
  filterctl consent +8613800138000 --sender acme --evidence "signed form #12"
  filterctl consent jane@example.com --sender acme --source crm \\
      --evidence "web form https://acme.example/join, 2025-03-01, 203.0.113.7"
""",
    ),
    "request": (
        "record a request (请求), valid for --ttl",
        """\
Record that the consumer at ADDRESS requested (请求) commercial messages from one
sender on one channel (asked for an offer, a quote, a reminder). A request lets
that sender's messages through for --ttl only (default: registry.request_ttl).
Like a consent, it needs --evidence when a refusal is on record.

example:
  filterctl request 13800138000 --sender acme --ttl 7d --evidence "chat #4711"
""",
    ),
    "refuse": (
        "record a refusal (拒绝)",
        """\
Record that the consumer at ADDRESS refused (拒绝) commercial messages: from one
sender (--sender) or from every sender (--all-senders), on the address's channel
or on every channel (--channel all). It takes effect at once and is acknowledged
only once the registry has it on disk.

examples:
  filterctl refuse +8613800138000 --all-senders --channel all --source "phone call"
  filterctl refuse jane@example.com --sender acme --evidence "ticket 7"
""",
    ),
    "status": (
        "every fact that applies, newest first",
        """\
Print every fact on record for ADDRESS, newest first: consent, request or
refusal, its sender (* = all senders), channel, time, source and evidence. With
--sender, only the facts that bear on that sender (its own and the all-senders
ones). --json prints an array.
""",
    ),
    "check": (
        "the decision for one message; exit 0 deliver, 1 drop",
        """\
Print the decision the relays would make for a message from --sender to
ADDRESS: "deliver", or "drop" and the reason (refused, no_consent). The exit
code carries it too: 0 deliver, 1 drop. --json prints an object with decision,
reason, sender, channel, class and basis (the fact that settled it, with its
source and evidence).
""",
    ),
    "import": (
        "import a CSV: address[,created_at,source,evidence]",
        """\
Import a CSV file, one fact per row: address[,created_at,source,evidence], with
an optional header row. Every good row is imported; each bad row is reported on
stderr as "line N: reason" (N the file's line number, header included) and the
exit code is then 2. Consents and requests over a refusal need an evidence cell.
One audit entry is written for the file.

example:
  filterctl import optouts.csv --action refuse --all-senders --channel all
""",
    ),
    "export": (
        "every fact, consumers by hash",
        """\
Print every fact in the registry, streamed: CSV with a header row, or one JSON
object per line. Consumers appear as their hash (the registry never holds raw
addresses). With --sender, only the facts of that sender and of all senders.
""",
    ),
    "audit": (
        "the audit log, newest first",
        """\
Print the audit log, newest first: every drop and deferral, every fact written
one by one, one entry per import. Filter by consumer (--to), sender and age.
""",
    ),
    "unsubscribe-url": (
        "a signed RFC 8058 one-click URL",
        """\
Print a signed RFC 8058 one-click unsubscribe URL for ADDRESS and --sender,
under http.public_url (needs [http]). Opening it shows a confirm page; the POST
records a refusal. Only the registry secret is read: the registry need not run.
""",
    ),
    "stats": (
        "registry counts and memory",
        "Print the registry's counts (consumers, facts by kind, audit entries) and the\n"
        "server's memory and version. Scans the registry: seconds per million facts.\n",
    ),
}
"""Each command's one-line summary (in `filterctl --help`) and its description."""


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: "
        "$FILTERD_CONFIG, /etc/filterd/filterd.toml, config/filterd.toml)",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document"
    )
    p = _Parser(
        prog="filterctl",
        description="Manage the filterd consent-and-refusal registry.",
        epilog="Each command has its own --help.\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    sub_parser = sub.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        summary, description = _COMMANDS[name]
        return sub_parser(
            name,
            parents=[common],
            help=summary,
            description=description,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,
        )

    sub.add_parser = add_parser  # type: ignore[method-assign,assignment]

    def fact_command(name: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name)
        c.add_argument("address", metavar="ADDRESS", help=_ADDRESS_HELP)
        c.add_argument(
            "--source",
            metavar="TEXT",
            default="cli",
            help="where the fact came from (default: cli)",
        )
        c.add_argument(
            "--evidence",
            metavar="TEXT",
            help="free text that proves it: form URL and IP, ticket, recording",
        )
        return c

    for name in ("consent", "request"):
        c = fact_command(name)
        c.add_argument("--sender", metavar="NAME", required=True, help=_SENDER_HELP)
        c.add_argument("--channel", choices=["email", "sms"], help=_CHANNEL_HELP)
        if name == "request":
            c.add_argument(
                "--ttl",
                metavar="DURATION",
                help="how long the request is valid, e.g. 30d (default: registry.request_ttl)",
            )
    c = fact_command("refuse")
    scope = c.add_mutually_exclusive_group(required=True)
    scope.add_argument("--sender", metavar="NAME", help="refuse this sender's messages")
    scope.add_argument("--all-senders", action="store_true", help="refuse every sender's messages")
    c.add_argument(
        "--channel",
        choices=["email", "sms", "all"],
        help="the channel, or all (default: from the address: email or sms)",
    )

    c = sub.add_parser("status")
    c.add_argument("address", metavar="ADDRESS", help=_ADDRESS_HELP)
    c.add_argument(
        "--sender", metavar="NAME", help="only the facts of this sender and of all senders"
    )
    c = sub.add_parser("check")
    c.add_argument("address", metavar="ADDRESS", help=_ADDRESS_HELP)
    c.add_argument("--sender", metavar="NAME", required=True, help="the sender of the message")
    c.add_argument(
        "--class",
        dest="message_class",
        default="commercial",
        choices=["commercial", "transactional"],
        help="the message's class (default: commercial; transactional is always delivered)",
    )
    _import_parser(sub)
    c = sub.add_parser("export")
    c.add_argument(
        "--sender", metavar="NAME", help="only the facts of this sender and of all senders"
    )
    c.add_argument(
        "--format", choices=["csv", "jsonl"], default="csv", help="output format (default: csv)"
    )
    c = sub.add_parser("audit")
    c.add_argument("--to", dest="to", metavar="ADDRESS", help="only entries about this consumer")
    c.add_argument("--sender", metavar="NAME", help="only entries of this sender")
    c.add_argument(
        "--since",
        metavar="DURATION",
        help="only entries this recent, e.g. 24h (default: everything kept)",
    )
    c.add_argument(
        "--limit",
        metavar="N",
        type=int,
        default=100,
        help="at most this many entries (default: 100)",
    )
    sub.add_parser("stats")
    c = sub.add_parser("unsubscribe-url")
    c.add_argument("address", metavar="ADDRESS", help=_ADDRESS_HELP)
    c.add_argument(
        "--sender",
        metavar="NAME",
        required=True,
        help="the sender the consumer unsubscribes from (one an account or [[smpp.numbers]] names)",
    )
    c.add_argument("--channel", choices=["email", "sms"], help=_CHANNEL_HELP)
    return p


def _import_parser(sub: Any) -> None:
    """The options of `filterctl import`."""
    c = sub.add_parser("import")
    c.add_argument("file", metavar="FILE", help="the CSV file (UTF-8)")
    c.add_argument(
        "--action",
        required=True,
        choices=["consent", "request", "refuse"],
        help="the fact every row records",
    )
    scope = c.add_mutually_exclusive_group(required=True)
    scope.add_argument("--sender", metavar="NAME", help=_SENDER_HELP)
    scope.add_argument(
        "--all-senders", action="store_true", help="refusals for every sender (--action refuse)"
    )
    c.add_argument(
        "--channel",
        choices=["email", "sms", "all"],
        help="the channel of every row, or all for refusals (default: from each address)",
    )
    c.add_argument(
        "--ttl", metavar="DURATION", help="request validity, e.g. 30d (with --action request)"
    )
    c.add_argument(
        "--source",
        metavar="TEXT",
        help="default source for rows without one (default: import:FILENAME)",
    )
    c.add_argument(
        "--jobs",
        metavar="N",
        type=int,
        help="processes (default: one per CPU for files over 8 MB without quoted fields)",
    )


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the `filterctl` console script.

    A reader that closes stdout early (`filterctl export | head -1`) ends the
    command quietly with EXIT_PIPE: no traceback, and stdout is pointed at
    /dev/null so that the interpreter's last flush has nowhere to fail.
    """
    try:
        try:
            code: int | str | None = run(argv, sys.stdout, sys.stderr)
        finally:  # also after --help, --version and usage errors (SystemExit)
            sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        code = EXIT_PIPE
    sys.exit(code)


def run(argv: Sequence[str] | None, out: TextIO, err: TextIO) -> int:
    """Run one command; return its exit code."""
    args = _parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    args.config = getattr(args, "config", None)
    logs.configure(err, os.environ.get("FILTERD_LOG_LEVEL", "WARNING"))
    try:
        settings = config_module.load(config_module.default_path(args.config, dict(os.environ)))
        command = _Command(args, settings, out, err)
        command.validate()
        return asyncio.run(command.execute())
    except (UsageError, ConfigError) as exc:
        err.write(f"filterctl: {exc}\n")
        return EXIT_USAGE
    except RegistryUnavailable as exc:
        err.write(f"filterctl: registry unreachable: {exc}\n")
        return EXIT_UNAVAILABLE
    except FilterdError as exc:
        err.write(f"filterctl: {exc}\n")
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        err.write("filterctl: interrupted\n")
        return EXIT_INTERRUPTED


class _Command:
    """One filterctl invocation: validated arguments, then the registry work."""

    def __init__(
        self, args: argparse.Namespace, settings: config_module.Settings, out: TextIO, err: TextIO
    ) -> None:
        self.args = args
        self.settings = settings
        self.out = out
        self.err = err
        self.region = settings.registry.default_region
        self.address: Address | None = None

    def validate(self) -> None:
        """Check every argument before the registry is touched (bad input writes nothing)."""
        a = self.args
        raw = getattr(a, "address", None) or getattr(a, "to", None)
        if raw is not None:
            self.address = normalize(raw, self.region)
            channel = getattr(a, "channel", None)
            if channel in ("email", "sms") and Channel(channel) is not self.address.channel:
                raise UsageError(f"--channel {channel} does not fit the address {raw!r}")
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
            _validate_import(a)
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
            handler: Callable[[Runtime], Any] = getattr(self, "cmd_" + self.args.command)
            code: int = await handler(runtime)
            return code
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

    async def cmd_consent(self, runtime: Runtime) -> int:
        """filterctl consent."""
        return await self._record(runtime, Kind.CONSENT)

    async def cmd_request(self, runtime: Runtime) -> int:
        """filterctl request."""
        return await self._record(runtime, Kind.REQUEST)

    async def cmd_refuse(self, runtime: Runtime) -> int:
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
                f"--sender {sender!r} is not a configured sender (smtp/smpp accounts, numbers)"
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

    async def cmd_status(self, runtime: Runtime) -> int:
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

    async def cmd_check(self, runtime: Runtime) -> int:
        """filterctl check."""
        address = self._address()
        message_class = MessageClass(self.args.message_class)
        consumer = runtime.service.hasher.consumer_id(address)
        facts = (await runtime.registry.lookup(self.args.sender, [consumer]))[0]
        decision = decide(
            Submission(self.args.sender, address.channel, message_class),
            facts,
            runtime.service.now_ms(),
            runtime.service.fail_mode,
        )
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
        self.emit(document, decision.action.value + (f" {reason}" if reason else ""))
        return EXIT_OK if decision.action is Action.DELIVER else EXIT_DROP

    async def cmd_audit(self, runtime: Runtime) -> int:
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

    async def cmd_export(self, runtime: Runtime) -> int:
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

    async def cmd_stats(self, runtime: Runtime) -> int:
        """filterctl stats."""
        stats = await runtime.registry.stats()
        self.emit(stats, "\n".join(f"{k}: {v}" for k, v in stats.items()))
        return EXIT_OK

    # ---- import ------------------------------------------------------------

    async def cmd_import(self, runtime: Runtime) -> int:
        """filterctl import: good rows are written, bad rows reported as `line N: reason`.

        A large file without quoted fields is imported by several processes
        (`--jobs`, default one per CPU above 8 MB).
        """
        a = self.args
        path = Path(a.file)
        kind = {"consent": Kind.CONSENT, "request": Kind.REQUEST, "refuse": Kind.REFUSAL}[a.action]
        job = ImportJob(
            settings=self.settings,
            path=path,
            kind=kind,
            sender=ALL_SENDERS if a.all_senders else a.sender,
            channel=Channel(a.channel) if a.channel in ("email", "sms") else None,
            all_channels=a.channel == "all",
            source=a.source or f"import:{path.name}",
            ttl_s=parse_duration(a.ttl) if a.ttl else None,
            now_ms=runtime.service.now_ms(),
        )
        # One-shot CLI: nothing else runs on this loop, so plain file reads are fine.
        try:
            parts = ranges(path, a.jobs or default_workers(path))
        except OSError as exc:
            raise UsageError(f"{a.file!r}: {exc.strerror}") from None
        progress = _Progress(self.err)
        if len(parts) == 1:
            with path.open(encoding="utf-8-sig", newline="") as handle:  # noqa: ASYNC230
                outcome = await import_lines(runtime, job, handle, 1, progress.add)
        else:
            outcome = await self._import_parallel(job, parts, progress)
        progress.finish()
        for line, reason in sorted(outcome.bad):
            self.err.write(f"line {line}: {reason}\n")
        counts = outcome.counts
        await runtime.registry.append_audit(
            [
                AuditEntry(
                    at_ms=runtime.service.now_ms(),
                    event="import",
                    sender=job.sender,
                    channel="all" if job.all_channels else (a.channel or "by-address"),
                    source=job.source,
                    origin="cli",
                    detail=f"{kind.value}: " + ", ".join(f"{k}={v}" for k, v in counts.items()),
                )
            ]
        )
        self.emit(
            {"file": str(path), "action": a.action, "processes": len(parts), **counts},
            f"imported {counts['stored'] + counts['superseded']} of {counts['rows']} rows "
            f"(stored {counts['stored']}, older than the registry's {counts['superseded']}), "
            f"{counts['bad']} bad",
        )
        return EXIT_USAGE if counts["bad"] else EXIT_OK

    async def _import_parallel(
        self, job: ImportJob, parts: list[tuple[int, int, int]], progress: _Progress
    ) -> Outcome:
        counter = new_counter()
        context = multiprocessing.get_context("spawn")
        outcome = Outcome()
        with ProcessPoolExecutor(
            len(parts),
            mp_context=context,
            initializer=init_worker,
            initargs=(counter, os.environ.get("FILTERD_LOG_LEVEL", "WARNING")),
        ) as pool:
            futures = [
                asyncio.wrap_future(pool.submit(import_range, job, start, end, first))
                for start, end, first in parts
            ]
            pending: set[asyncio.Future[Outcome]] = set(futures)
            while pending:
                _, pending = await asyncio.wait(pending, timeout=0.25)
                progress.show(counter.value)
            for future in futures:
                outcome.add(future.result())
        return outcome


def _validate_import(a: argparse.Namespace) -> None:
    """The import options, checked before the registry is touched."""
    if a.action != "refuse" and a.all_senders:
        raise UsageError(f"--action {a.action} needs --sender (consent is per sender)")
    if a.ttl is not None and a.action != "request":
        raise UsageError("--ttl goes with --action request")
    if a.jobs is not None and not 1 <= a.jobs <= 64:
        raise UsageError(f"--jobs: {a.jobs} is outside 1-64")
    if not Path(a.file).is_file():
        raise UsageError(f"{a.file!r}: no such file")


class _Progress:
    """A one-line progress display on stderr (rows and rows/s), only on a terminal."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.enabled = err.isatty()
        self.started = time.monotonic()
        self.rows = 0
        self.shown = 0.0

    def add(self, rows: int) -> None:
        """Count stored rows (single-process import)."""
        self.show(self.rows + rows)

    def show(self, rows: int) -> None:
        """Redraw with the rows stored so far (at most 4 times a second)."""
        self.rows = rows
        now = time.monotonic()
        if not self.enabled or now - self.shown < 0.25:
            return
        self.shown = now
        rate = rows / max(now - self.started, 1e-6)
        self.err.write(f"\rimported {rows:,} rows, {rate:,.0f} rows/s")
        self.err.flush()

    def finish(self) -> None:
        """End the line."""
        if self.enabled:
            self.shown = 0.0
            self.show(self.rows)
            self.err.write("\n")


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def fact_document(fact: Fact) -> dict[str, Any]:
    """A fact as a JSON object."""
    return {
        "fact": fact.kind.value,
        "sender": fact.sender,
        "channel": fact.channel.value if fact.channel else "all",
        "created_at": _iso(fact.at_ms),
        "expires_at": _iso(fact.expires_ms),
        "source": fact.source,
        "evidence": fact.evidence,
        "message_id": fact.message_id,
    }


def fact_line(fact: Fact) -> str:
    """A fact as one text line."""
    doc = fact_document(fact)
    parts = [str(doc["created_at"]), fact.kind.value, f"sender={fact.sender}",
             f"channel={doc['channel']}", f"source={fact.source}"]  # fmt: skip
    if fact.expires_ms is not None:
        parts.append(f"expires={doc['expires_at']}")
    if fact.evidence:
        parts.append(f"evidence={fact.evidence!r}")
    return "  ".join(parts)


def audit_document(entry: AuditEntry) -> dict[str, Any]:
    """An audit entry as a JSON object."""
    return {
        "at": _iso(entry.at_ms),
        "event": entry.event,
        "sender": entry.sender,
        "consumer": entry.consumer,
        "channel": entry.channel,
        "reason": entry.reason,
        "source": entry.source,
        "origin": entry.origin,
        "message_id": entry.message_id,
        "detail": entry.detail,
    }


def audit_line(entry: AuditEntry) -> str:
    """An audit entry as one text line."""
    doc = audit_document(entry)
    return "  ".join(
        [str(doc["at"]), entry.event]
        + [f"{k}={v}" for k, v in doc.items() if k not in ("at", "event") and v is not None]
    )
