"""SIGHUP (filterd/daemon/reload.py): which changed settings need a restart."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from filterd.config.load import load as load_config
from filterd.daemon.reload import RELOADED, RESTART_KEYS, restart_needed
from filterd.model import MessageClass
from filterd.settings import (
    CancelMethod,
    CmppAccount,
    CmppSettings,
    CmppUpstream,
    ListenerLimits,
    Settings,
    SmppSettings,
    SmtpSettings,
)

REFERENCE = Path(__file__).resolve().parents[1] / "config" / "filterd.toml"


def test_restart_needed_names_what_a_reload_cannot_take() -> None:
    """Listen addresses, limits and whole [http]/[policy] sections need a restart;
    accounts, numbers and keywords do not (a reload takes them)."""
    old = load_config(REFERENCE)
    assert old.smtp is not None
    assert old.smpp is not None
    assert restart_needed(old, old) == []
    moved = dataclasses.replace(
        old,
        smtp=dataclasses.replace(
            old.smtp, listen=("127.0.0.1", 2626), limits=ListenerLimits(60.0), accounts=()
        ),
        smpp=dataclasses.replace(old.smpp, accounts=(), numbers=()),
        policy=None,
    )
    assert restart_needed(old, moved) == ["smtp.listen", "policy", "smtp.limits"]


def test_a_changed_compliance_table_needs_a_restart() -> None:
    """[compliance] (cancel method, quiet hours, signatures) is read at start: a reload
    that changes it names it among what needs a restart."""
    old = load_config(REFERENCE)
    assert old.compliance is not None
    changed = dataclasses.replace(
        old, compliance=dataclasses.replace(old.compliance, cancel_method=CancelMethod.OFF)
    )
    assert restart_needed(old, changed) == ["compliance"]
    assert restart_needed(old, dataclasses.replace(old, compliance=None)) == ["compliance"]


def test_cmpp_keys_a_reload_cannot_take() -> None:
    """[cmpp] listen, upstream, window, workers and limits need a restart; its accounts,
    numbers and confirmation texts do not (a reload takes them)."""
    old = load_config(REFERENCE)
    cmpp = CmppSettings(listen=("127.0.0.1", 7890))
    before = dataclasses.replace(old, cmpp=cmpp)
    accounts = dataclasses.replace(
        cmpp, accounts=(CmppAccount("900001", "x", "acme", MessageClass.COMMERCIAL),)
    )
    assert restart_needed(before, dataclasses.replace(old, cmpp=accounts)) == []
    upstream = CmppUpstream("127.0.0.1", 7891, "901234", "secret")
    moved = dataclasses.replace(
        cmpp, listen=("127.0.0.1", 7900), upstream=upstream, window=32, workers=2,
        limits=ListenerLimits(60.0),
    )  # fmt: skip
    assert restart_needed(before, dataclasses.replace(old, cmpp=moved)) == [
        "cmpp.listen", "cmpp.upstream", "cmpp.window", "cmpp.workers", "cmpp.limits",
    ]  # fmt: skip


def test_every_setting_is_either_reloaded_or_named_for_a_restart() -> None:
    """Each field of Settings (and of its [smtp], [smpp] and [cmpp] tables) is either taken
    by a reload or named in `restart_needed` when it changes — never silently ignored."""
    sections = {"smtp": SmtpSettings, "smpp": SmppSettings, "cmpp": CmppSettings}
    every = []
    for field in dataclasses.fields(Settings):
        if field.name in sections:
            every += [f"{field.name}.{f.name}" for f in dataclasses.fields(sections[field.name])]
        else:
            every.append(field.name)
    assert sorted(every) == sorted([*RESTART_KEYS, *RELOADED])
    assert set(RESTART_KEYS).isdisjoint(RELOADED)


def test_smtp_and_smpp_keys_read_at_start_are_named() -> None:
    """A reload that changes smpp.window or an [smtp] key other than its accounts names
    them in `restart_needed` (they are read once, at start)."""
    old = load_config(REFERENCE)
    assert old.smtp is not None
    assert old.smpp is not None
    changed = dataclasses.replace(
        old,
        smtp=dataclasses.replace(old.smtp, max_recipients=7, hostname="mx.example.net"),
        smpp=dataclasses.replace(old.smpp, window=old.smpp.window + 1),
    )
    assert restart_needed(old, changed) == ["smpp.window", "smtp.max_recipients", "smtp.hostname"]
