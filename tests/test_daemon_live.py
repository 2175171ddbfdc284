"""What a serving process holds (filterd/daemon/live.py): start-up progress counted
front end by front end, and the SMTP accounts of a config."""

from __future__ import annotations

import asyncio
from pathlib import Path

from filterd.config.load import load as load_config
from filterd.daemon.live import Live, smtp_accounts

REFERENCE = Path(__file__).resolve().parents[1] / "config" / "filterd.toml"


def test_all_listening_is_set_once_every_front_end_listens() -> None:
    """`all_listening` is set when the last expected front end has listened, not before."""

    async def run() -> list[bool]:
        live = Live(
            load_config(REFERENCE),
            runtime=None,  # type: ignore[arg-type]  # not used by the counting
            stop=asyncio.Event(),
            notifier=None,  # type: ignore[arg-type]
            accounts=None,  # type: ignore[arg-type]
            expected=2,
        )
        seen = [live.all_listening.is_set()]
        live.listened()
        seen.append(live.all_listening.is_set())
        live.listened()
        seen.append(live.all_listening.is_set())
        return seen

    assert asyncio.run(run()) == [False, False, True]


def test_smtp_accounts_of_a_config(tmp_path: Path) -> None:
    """The [[smtp.accounts]] of a config, or none without [smtp]."""
    reference = load_config(REFERENCE)
    assert reference.smtp is not None
    assert smtp_accounts(reference) == reference.smtp.accounts
    bare = tmp_path / "bare.toml"
    bare.write_text("[registry]\n")
    assert smtp_accounts(load_config(bare)) == ()
