"""SIGHUP (filterd/daemon/reload.py): which changed settings need a restart."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from filterd.config.load import load as load_config
from filterd.daemon.reload import restart_needed
from filterd.model import MessageClass
from filterd.settings import CancelMethod, CmppAccount, CmppSettings, CmppUpstream, ListenerLimits

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
