"""filterctl's command line: every command with its description, argument help
texts and the exit codes (argparse)."""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from typing import TYPE_CHECKING, NoReturn

import filterd
from filterd.cli.exits import EXIT_CODES, EXIT_USAGE

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

_ADDRESS_HELP = (
    "a phone number (E.164 like +8613800138000, or national with registry.default_region) "
    "or an email address"
)


_CHANNELS = ["email", "sms", "voice"]
_CHANNEL_HELP = (
    "the channel: voice is commercial calls, to a phone number "
    "(default: from the address: email for an email address, else sms)"
)


_SENDER_HELP = "the sender (brand) the fact is about, as the accounts in the config name it"


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line error (its default, made explicit)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"filterctl: {message}\n")

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        """Print help, version and usage errors; unlike argparse, do not hide a closed
        stdout (main() ends with EXIT_PIPE, as for any other output)."""
        if message:
            (file or sys.stderr).write(message)


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
sender (--sender) or from every sender (--all-senders), on the address's channel,
on the --channel named (voice: commercial calls) or on every channel (--channel
all: email, sms and voice). It takes effect at once and is acknowledged only
once the registry has it on disk.

examples:
  filterctl refuse +8613800138000 --all-senders --channel all --source "phone call"
  filterctl refuse +8613800138000 --sender acme --channel voice --source "call centre"
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
ADDRESS on its channel (--channel voice: a commercial call to the number):
"deliver", or "drop" and the reason (refused, no_consent). The exit
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


def parser() -> argparse.ArgumentParser:
    """filterctl's arguments: every command with its description, argument help texts
    and the exit codes."""
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

    def command(name: str) -> argparse.ArgumentParser:
        """A command with the common options, its summary, description and the exit codes."""
        return _command(sub, common, name)

    def fact_command(name: str) -> argparse.ArgumentParser:
        """consent, request or refuse: ADDRESS, --source, --evidence."""
        c = command(name)
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
        c.add_argument("--channel", choices=_CHANNELS, help=_CHANNEL_HELP)
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
        choices=[*_CHANNELS, "all"],
        help="the channel, or all (email, sms and voice; default: from the address: email or sms)",
    )

    c = command("status")
    c.add_argument("address", metavar="ADDRESS", help=_ADDRESS_HELP)
    c.add_argument(
        "--sender", metavar="NAME", help="only the facts of this sender and of all senders"
    )
    c = command("check")
    c.add_argument("address", metavar="ADDRESS", help=_ADDRESS_HELP)
    c.add_argument("--sender", metavar="NAME", required=True, help="the sender of the message")
    c.add_argument(
        "--class",
        dest="message_class",
        default="commercial",
        choices=["commercial", "transactional"],
        help="the message's class (default: commercial; transactional is always delivered)",
    )
    c.add_argument("--channel", choices=_CHANNELS, help=_CHANNEL_HELP)
    _import_parser(command("import"))
    c = command("export")
    c.add_argument(
        "--sender", metavar="NAME", help="only the facts of this sender and of all senders"
    )
    c.add_argument(
        "--format", choices=["csv", "jsonl"], default="csv", help="output format (default: csv)"
    )
    c = command("audit")
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
    command("stats")
    c = command("unsubscribe-url")
    c.add_argument("address", metavar="ADDRESS", help=_ADDRESS_HELP)
    c.add_argument(
        "--sender",
        metavar="NAME",
        required=True,
        help="the sender the consumer unsubscribes from "
        "(one an account, [[smpp.numbers]] or [[cmpp.numbers]] names)",
    )
    c.add_argument("--channel", choices=_CHANNELS, help=_CHANNEL_HELP)
    return p


def _command(
    sub: argparse._SubParsersAction[_Parser], common: _Parser, name: str
) -> argparse.ArgumentParser:
    """The parser of command `name`: the common options, its summary and description
    (from _COMMANDS) and the exit codes."""
    summary, description = _COMMANDS[name]
    parsed: argparse.ArgumentParser = sub.add_parser(
        name,
        parents=[common],
        help=summary,
        description=description,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parsed


def _import_parser(c: argparse.ArgumentParser) -> None:
    """The options of `filterctl import`."""
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
        choices=[*_CHANNELS, "all"],
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
