"""The operator documentation (README.md and docs/*.md) stays true to the code.

The truth comes from the code, never from a list kept here: the config keys from
the loader's key schema (filterd/config/table.py) and the tables a real config file
makes it build, their defaults from what the loader's readers pass for an absent
key while they read that file, the commands and options from the argparse parsers
of `filterctl` and `filterd`, the exit codes from their modules, the environment
variables from the sources. The rules the pages follow:

- docs/configuration.md names every key as its full dotted name in backticks in
  the first cell of a `| key | default | meaning |` table row (`registry.url`,
  `smpp.upstream.window`; a key of an array of tables as `smtp.accounts[].username`),
  and that row's default cell shows the default (a duration in any unit; a list's
  items may follow the table in the same section);
- docs/commands.md has a `filterd` and a `filterctl` section, each with an exit
  code table (`| exit | meaning |`); every `filterctl` command has a row of its
  own in the table under `### Commands` (first cell starting `` `COMMAND``)
  naming each of its long options; its `Environment` section names every
  environment variable filterd reads;
- README.md links every page of docs/;
- every relative link (and its `#anchor`, GitHub-style) resolves;
- no page cites the contract or the design notes (`SPEC`, `§`, `DESIGN.md`), or
  names a path of a build machine (`/work/`, `/home/`, `/Users/`, `/root/`); a
  `/tmp/` path only inside code (an example command).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import pytest

from filterd.cli import exits
from filterd.cli.parsing import parser as filterctl_parser
from filterd.config import table as config_table
from filterd.config import values as config_values
from filterd.config.load import load
from filterd.daemon import entry, serve
from filterd.units import parse_duration

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
CONFIGURATION = DOCS / "configuration.md"
COMMANDS = DOCS / "commands.md"

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_DOTTED_KEY = re.compile(r"[a-z_]+(?:\[\])?(?:\.[a-z_]+(?:\[\])?)+")
_DURATION = re.compile(r"\b[0-9]+[smhd]\b")


# --- reading Markdown --------------------------------------------------------------


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _prose(text: str) -> str:
    """`text` with its fenced code blocks blanked (same length, same lines)."""
    return _FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def _without_code(text: str) -> str:
    """`text` with fenced code blocks and inline code spans blanked."""
    return _CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), _prose(text))


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: markup and punctuation dropped, lower case,
    spaces to hyphens (`` `[smtp]` `` -> `smtp`, `Reload (SIGHUP)` -> `reload-sighup`)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    """Every anchor of a page's headings (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for match in _HEADING.finditer(_prose(text)):
        anchor = _anchor(match.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


@dataclass
class Section:
    """A heading and the text under it up to the next heading of its level or above
    (its sub-sections included)."""

    title: str
    level: int
    text: str


def _sections(text: str) -> list[Section]:
    """Every section of a page, in order."""
    heads = list(_HEADING.finditer(_prose(text)))
    found = []
    for index, head in enumerate(heads):
        level = len(head.group(1))
        end = next((h.start() for h in heads[index + 1 :] if len(h.group(1)) <= level), len(text))
        found.append(Section(head.group(2), level, text[head.end() : end]))
    return found


def _section(text: str, title: str) -> Section:
    """The one section titled `title` (backticks ignored)."""
    matches = [s for s in _sections(text) if s.title.replace("`", "") == title]
    assert len(matches) == 1, f"no single section {title!r}"
    return matches[0]


def _cells(line: str) -> list[str]:
    """The cells of a table row (`\\|` is a pipe inside a cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _tables(text: str) -> Iterator[tuple[list[str], list[list[str]]]]:
    """Each table of `text` (outside code blocks): its header cells and its rows."""
    lines = _prose(text).splitlines()
    index = 0
    while index < len(lines):
        if not lines[index].startswith("|"):
            index += 1
            continue
        block = []
        while index < len(lines) and lines[index].startswith("|"):
            block.append(_cells(lines[index]))
            index += 1
        yield block[0], block[2:]


def _code_spans(cell: str) -> list[str]:
    return [m.group(2).strip() for m in _CODE_SPAN.finditer(cell)]


# --- the config keys and their defaults, from the loader ----------------------------

_FULL_CONFIG = """\
[smtp]
listen = "127.0.0.1:2525"
upstream = "127.0.0.1:25"
[[smtp.accounts]]
username = "u"
password = "p"
sender = "acme"
stream = "commercial"

[smpp]
listen = "127.0.0.1:2775"
[smpp.upstream]
host = "127.0.0.1"
port = 2776
system_id = "filterd"
password = "secret"
[[smpp.accounts]]
system_id = "esme"
password = "pw"
sender = "acme"
stream = "commercial"
[[smpp.numbers]]
address = "10690000"
sender = "acme"
[smpp.confirmations]

[cmpp]
listen = "127.0.0.1:7890"
[cmpp.upstream]
host = "127.0.0.1"
port = 7891
sp_id = "901234"
shared_secret = "s"
[[cmpp.accounts]]
sp_id = "905678"
shared_secret = "s"
sender = "acme"
stream = "commercial"
[[cmpp.numbers]]
address = "1069000012"
sender = "acme"
[cmpp.confirmations]

[http]
listen = "127.0.0.1:8025"
public_url = "https://unsub.example.com"

[policy]
listen = "127.0.0.1:9998"

[dkim]
selector = "mail"
domain = "example.com"
key_file = "dkim.key"

[daemon]

[compliance]
[[compliance.senders]]
sender = "acme"

[api]
listen = "127.0.0.1:8026"
[[api.keys]]
name = "crm"
key_file = "api.key"
senders = ["*"]
scopes = ["check"]
"""
"""A config with every table the loader knows, each with its required keys only, so
every other key is read as absent and gets its default."""


@dataclass
class Schema:
    """What the loader accepts: each key's documented name, and the defaults it gave
    to the keys absent from _FULL_CONFIG (with the reader that gave each)."""

    keys: set[str]
    defaults: dict[str, tuple[Any, object]]


def _doc_name(table_name: str) -> str:
    """`smtp.accounts[0]` -> `smtp.accounts[]`."""
    return re.sub(r"\[\d+\]", "[]", table_name)


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Schema:
    """Load _FULL_CONFIG while watching the loader's key readers (Table.take, parse,
    strings, values.networks): the tables it builds and each default it passes for an
    absent key. The key names come from config.table._KEYS. (A key read otherwise,
    like smtp.max_message_size, a string or an integer, has no default checked.)"""
    directory = tmp_path_factory.mktemp("config")
    path = directory / "filterd.toml"
    path.write_text(_FULL_CONFIG, encoding="utf-8")
    for name in ("dkim.key", "api.key"):
        (directory / name).write_text("k" * 40 + "\n", encoding="ascii")
        (directory / name).chmod(0o600)
    table = config_table.Table
    readers = {
        table.take.__code__: "take",
        table.parse.__code__: "parse",
        table.strings.__code__: "strings",
        config_values.networks.__code__: "networks",
    }
    tables: set[str] = set()
    defaults: dict[str, tuple[Any, object]] = {}

    def watch(frame: FrameType, event: str, _arg: object) -> None:
        if event != "call":
            return
        code = frame.f_code
        local = frame.f_locals
        if code is table.__init__.__code__:
            tables.add(_doc_name(local["name"]))
        elif code in readers:
            owner = local.get("self", local.get("t"))
            key, default = local["key"], local.get("default")
            absent = key not in owner.data and not local.get("required", False)
            if absent and default not in (None, "", (), {}):
                parser = local.get("parser") if readers[code] == "parse" else None
                defaults[_doc_name(owner.key(key))] = (default, parser)

    before = sys.getprofile()
    sys.setprofile(watch)
    try:
        load(path)
    finally:
        sys.setprofile(before)
    known = config_table._KEYS
    named = {_doc_name(t).replace("[]", ""): _doc_name(t) for t in tables if t}
    assert set(known) - {""} <= set(named), "add the missing tables to _FULL_CONFIG"
    keys = {f"{named[t]}.{k}" for t in known if t for k in known[t] if f"{t}.{k}" not in known}
    return Schema(keys, defaults)


@dataclass
class KeyRow:
    """A row of a key table of docs/configuration.md."""

    keys: list[str]
    default: str
    section: str


def _key_rows() -> list[KeyRow]:
    rows = []
    for section in _sections(_read(CONFIGURATION)):
        own = _prose(section.text).split("\n#", 1)[0]  # up to the first sub-heading
        for header, body in _tables(own):
            if header[:2] != ["key", "default"]:
                continue
            for cells in body:
                keys = [s for s in _code_spans(cells[0]) if _DOTTED_KEY.fullmatch(s)]
                rows.append(KeyRow(keys, cells[1], own))
    return rows


def _shows_default(row: KeyRow, default: Any, parser: object) -> bool:
    """Whether the row's default cell (for a list: the row or its section) shows
    `default`, the value the loader uses for an absent key."""
    cell = row.default
    if parser is parse_duration:
        return any(parse_duration(d) == default for d in _DURATION.findall(cell))
    if isinstance(default, bool):
        return ("true" if default else "false") in cell
    if isinstance(default, int | float):
        number = str(int(default)) if float(default).is_integer() else str(default)
        return re.search(rf"(?<![\d.]){re.escape(number)}(?![\d.])", cell) is not None
    if isinstance(default, str):
        return f'"{default}"' in cell
    if isinstance(default, tuple):
        where = f"{cell}\n{row.section}"
        return all(f"`{item}`" in where or f'"{item}"' in where for item in default)
    raise AssertionError(f"no rule for showing the default {default!r}")


def test_every_config_key_is_in_configuration_md(schema: Schema) -> None:
    """Every key the config loader accepts has a row in docs/configuration.md, under
    its full dotted name (`smtp.accounts[].username` for an array of tables)."""
    documented = {key for row in _key_rows() for key in row.keys}
    assert sorted(schema.keys - documented) == []


def test_configuration_md_names_no_unknown_key(schema: Schema) -> None:
    """Every key docs/configuration.md lists in a key table is one the loader
    accepts (a renamed or removed key does not linger on the page)."""
    documented = {key for row in _key_rows() for key in row.keys}
    assert sorted(documented - schema.keys) == []


def test_configuration_md_shows_each_default(schema: Schema) -> None:
    """The row of each key with a default shows the default the loader uses when the
    key is absent (a duration in any unit, `"30d"` or `"720h"`)."""
    wrong = []
    for row in _key_rows():
        for key in row.keys:
            if key in schema.defaults:
                default, parser = schema.defaults[key]
                if not _shows_default(row, default, parser):
                    wrong.append(f"{key}: default {default!r}, page says {row.default!r}")
    assert wrong == []


# --- the commands, options and exit codes, from the parsers ---------------------------


def _subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def _long_options(p: argparse.ArgumentParser) -> set[str]:
    """The long options a parser shows in its help (--help itself aside)."""
    return {
        option
        for action in p._actions
        if action.help is not argparse.SUPPRESS
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


def _exit_codes(module: ModuleType) -> set[int]:
    return {
        value
        for name, value in vars(module).items()
        if name.startswith("EXIT_") and isinstance(value, int)
    }


def _exit_table(section: Section) -> set[int]:
    """The exit codes of the `| exit | meaning |` table of a section."""
    codes = set()
    for header, body in _tables(section.text):
        if header[:1] == ["exit"]:
            codes |= {int(cells[0]) for cells in body if cells[0].isdigit()}
    return codes


def _command_rows(section: Section) -> dict[str, str]:
    """The rows of the `| command | ... |` table of a section, by command name."""
    rows = {}
    for header, body in _tables(section.text):
        if header[:1] == ["command"]:
            for cells in body:
                spans = _code_spans(cells[0])
                if spans:
                    rows[spans[0].split()[0]] = " | ".join(cells)
    return rows


def test_every_filterctl_command_and_option_is_in_commands_md() -> None:
    """docs/commands.md has a row for each `filterctl` command naming each of its long
    options; the options every command shares (--config, --json, --version) are in
    the `filterctl` section."""
    top = filterctl_parser()
    section = _section(_read(COMMANDS), "filterctl")
    rows = _command_rows(section)
    missing = [f"filterctl {o}" for o in sorted(_long_options(top)) if o not in section.text]
    for name, sub in _subcommands(top).items():
        if name not in rows:
            missing.append(f"filterctl {name}")
            continue
        own = _long_options(sub) - _long_options(top)
        missing += [f"filterctl {name} {o}" for o in sorted(own) if not _names(rows[name], o)]
    assert missing == []


def _names(text: str, option: str) -> bool:
    """Whether `text` names `option` (`--sender`, not as part of `--senders`)."""
    return re.search(rf"{re.escape(option)}(?![\w-])", text) is not None


def test_filterctl_option_defaults_are_in_commands_md() -> None:
    """Each `filterctl` option with a default value (`--source` cli, `--limit` 100)
    has it written in its command's row as `default VALUE` (or `default: VALUE`)."""
    rows = _command_rows(_section(_read(COMMANDS), "filterctl"))
    missing = []
    for name, sub in _subcommands(filterctl_parser()).items():
        for action in sub._actions:
            default = action.default
            if isinstance(default, bool) or not isinstance(default, str | int):
                continue
            if default == argparse.SUPPRESS or action.help is argparse.SUPPRESS:
                continue
            said = rf"default:?\s+`?{re.escape(str(default))}`?(?![\w-])"
            if not re.search(said, rows.get(name, "")):
                missing.append(f"{name} {action.option_strings[0]}: default {default}")
    assert missing == []


def test_filterctl_exit_codes_are_in_commands_md() -> None:
    """Every exit code of filterd/cli/exits.py has a row in the exit code table of the
    `filterctl` section, and the table lists no other code."""
    section = _section(_read(COMMANDS), "filterctl")
    assert _exit_table(section) == _exit_codes(exits)


def test_every_filterd_command_option_and_exit_code_is_in_commands_md() -> None:
    """The `filterd` section of docs/commands.md names each `filterd` command
    (`filterd serve`, `filterd check-config`) and each option --help shows, and its
    exit code table lists exactly the daemon's exit codes."""
    section = _section(_read(COMMANDS), "filterd")
    top = entry._parser()
    missing = [o for o in sorted(_long_options(top)) if o not in section.text]
    for name, sub in _subcommands(top).items():
        if f"filterd {name}" not in section.text:
            missing.append(f"filterd {name}")
        missing += [f"{name} {o}" for o in sorted(_long_options(sub)) if o not in section.text]
    assert missing == []
    assert _exit_table(section) == _exit_codes(serve)


def test_every_environment_variable_is_in_commands_md() -> None:
    """Every environment variable filterd reads (`environ.get("NAME")` or
    `environ["NAME"]` in filterd/) is named in the Environment section of
    docs/commands.md."""
    read = {
        match.group(1)
        for path in (ROOT / "filterd").rglob("*.py")
        for match in re.finditer(r"environ(?:\.get\(|\[)\s*\"([A-Z][A-Z0-9_]*)\"", _read(path))
    }
    assert read, "no environment variable found: the pattern is stale"
    section = _section(_read(COMMANDS), "Environment")
    assert sorted(name for name in read if f"`{name}`" not in section.text) == []


# --- links and what the pages may not say ----------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link of the page names an existing file or directory, and its
    #anchor a heading of the target page."""
    broken = []
    for target in _LINK.findall(_without_code(_read(page))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(_read(resolved)):
            broken.append(f"{target}: no such heading")
    assert broken == []


def test_readme_links_every_page() -> None:
    """README.md links every page of docs/ (its map is where an operator starts)."""
    linked = {target.partition("#")[0] for target in _LINK.findall(_read(ROOT / "README.md"))}
    assert (
        sorted(f"docs/{p.name}" for p in DOCS.glob("*.md") if f"docs/{p.name}" not in linked) == []
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_stands_alone(page: Path) -> None:
    """The page cites neither the contract nor the design notes (SPEC, §, DESIGN.md)
    and names no path of a build machine; a /tmp/ path appears only in code (an
    example command), never in the prose."""
    text = _read(page)
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for bad in re.findall(r"\bSPEC\b|§|DESIGN\.md|(?<![\w.~])/(?:work|home|Users|root)/", line):
            found.append(f"line {number}: {bad}")
    for number, line in enumerate(_without_code(text).splitlines(), 1):
        if re.search(r"(?<![\w.~])/tmp/", line):
            found.append(f"line {number}: /tmp/ outside code")
    assert found == []
