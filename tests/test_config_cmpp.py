"""filterd.config.cmpp: [cmpp] with its ISMG upstream, accounts, MO numbers and
confirmation texts; the reference config's commented example; bad values name the
dotted key and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.config.load import load
from filterd.errors import ConfigError
from filterd.model import MessageClass
from filterd.settings import (
    CMPP_V20,
    CMPP_V30,
    CmppAccount,
    CmppNumber,
    CmppUpstream,
    Confirmations,
)
from tests.config_helpers import REFERENCE, assert_refused, write

CMPP_HEAD = '[cmpp]\nlisten = "127.0.0.1:7890"\n'
UPSTREAM = (
    '[cmpp.upstream]\nhost = "127.0.0.1"\nport = 7891\nsp_id = "901234"\nshared_secret = "s"\n'
)
ACCOUNT = (
    '[[cmpp.accounts]]\nsp_id = "900001"\nshared_secret = "x"\nsender = "acme"\n'
    'stream = "commercial"\n'
)


def _reference_example() -> str:
    """The reference config's commented [cmpp] example, uncommented."""
    text = REFERENCE.read_text(encoding="utf-8")
    block = text[text.index("# [cmpp]\n") : text.index("[keywords]")]
    lines = []
    for line in block.splitlines():
        lines.append(line[2:] if line.startswith("# ") else "" if line.startswith("#") else line)
    return "\n".join(lines) + "\n"


def test_reference_has_cmpp_off(tmp_path: Path) -> None:
    """The reference config leaves the CMPP relay off (its example is commented out)."""
    assert load(REFERENCE).cmpp is None


def test_reference_example_reads(tmp_path: Path) -> None:
    """The commented [cmpp] example of the reference config, uncommented, reads to the
    documented values: ISMG in 3.0, one account, one service number, the defaults."""
    cmpp = load(write(tmp_path, _reference_example())).cmpp
    assert cmpp is not None
    assert cmpp.listen == ("127.0.0.1", 7890)
    assert cmpp.upstream == CmppUpstream("127.0.0.1", 7891, "901234", "secret", CMPP_V30, 16)
    assert cmpp.accounts == (CmppAccount("900001", "chg-me", "acme", MessageClass.COMMERCIAL),)
    assert cmpp.numbers == (CmppNumber("10690001", "acme"),)
    assert (cmpp.window, cmpp.receipt_ttl_s, cmpp.workers) == (16, 3 * 86400, 1)
    assert cmpp.limits.idle_timeout_s == 120
    assert cmpp.confirmations == Confirmations()


def test_every_key_read(tmp_path: Path) -> None:
    """Each [cmpp] key reaches its setting: version 2.0 is 0x20, durations in seconds,
    limits, and confirmation texts that replace the defaults of their intent only."""
    text = (
        CMPP_HEAD + 'window = 32\nreceipt_ttl = "1d"\nworkers = 2\nidle_timeout = "60s"\n'
        "max_connections = 50\nmax_connections_per_address = 5\n"
        + UPSTREAM
        + 'version = "2.0"\nwindow = 8\nrate = 200\nactive_test = "10s"\n'
        + '[cmpp.confirmations]\nenabled = false\nopt_out = { zh = "已退订" }\n'
        + ACCOUNT
        + '[[cmpp.accounts]]\nsp_id = "900002"\nshared_secret = "y"\nsender = "beta"\n'
        'stream = "transactional"\n'
    )
    cmpp = load(write(tmp_path, text)).cmpp
    assert cmpp is not None
    assert cmpp.upstream == CmppUpstream("127.0.0.1", 7891, "901234", "s", CMPP_V20, 8, 200.0, 10)
    assert [(a.sp_id, a.stream) for a in cmpp.accounts] == [
        ("900001", MessageClass.COMMERCIAL),
        ("900002", MessageClass.TRANSACTIONAL),
    ]
    assert (cmpp.window, cmpp.receipt_ttl_s, cmpp.workers) == (32, 86400, 2)
    assert (cmpp.limits.idle_timeout_s, cmpp.limits.max_connections) == (60, 50)
    assert cmpp.limits.max_connections_per_address == 5
    assert not cmpp.confirmations.enabled
    assert cmpp.confirmations.text("opt_out", "zh") == "已退订"
    assert cmpp.confirmations.text("help", "zh") == Confirmations().text("help", "zh")


BAD_VALUES = [
    pytest.param(CMPP_HEAD + UPSTREAM.replace('"901234"', '"90123"'), "cmpp.upstream.sp_id",
                 "'90123' is not 6 digits", id="upstream-sp-id-short"),
    pytest.param(CMPP_HEAD + UPSTREAM + 'version = "3"\n', "cmpp.upstream.version",
                 "'3'", id="upstream-version"),
    pytest.param(CMPP_HEAD + UPSTREAM.replace("7891", "0"), "cmpp.upstream.port",
                 "0 is out of range", id="upstream-port"),
    pytest.param(CMPP_HEAD + UPSTREAM + "window = 0\n", "cmpp.upstream.window",
                 "0 is outside", id="upstream-window"),
    pytest.param(CMPP_HEAD + UPSTREAM + "rate = -1\n", "cmpp.upstream.rate",
                 "-1.0 is negative", id="upstream-rate"),
    pytest.param(CMPP_HEAD + UPSTREAM.replace('shared_secret = "s"', 'shared_secret = ""'),
                 "cmpp.upstream.shared_secret", "is empty", id="upstream-empty-secret"),
    pytest.param(CMPP_HEAD + UPSTREAM + 'active_test = "soon"\n', "cmpp.upstream.active_test",
                 "'soon'", id="upstream-active-test"),
    pytest.param(CMPP_HEAD + UPSTREAM + "password = \"p\"\n", "cmpp.upstream.password",
                 "unknown key", id="upstream-unknown-key"),
    pytest.param(CMPP_HEAD + ACCOUNT.replace('"900001"', '"SP0001"'), "cmpp.accounts[0].sp_id",
                 "'SP0001' is not 6 digits", id="account-sp-id-letters"),
    pytest.param(CMPP_HEAD + ACCOUNT + ACCOUNT.replace('"x"', '"z"'), "cmpp.accounts[1].sp_id",
                 "'900001' is already the sp_id of cmpp.accounts[0]", id="account-duplicate"),
    pytest.param(CMPP_HEAD + ACCOUNT.replace('shared_secret = "x"\n', ""),
                 "cmpp.accounts[0].shared_secret", "is required", id="account-no-secret"),
    pytest.param(CMPP_HEAD + ACCOUNT.replace('"commercial"', '"bulk"'),
                 "cmpp.accounts[0].stream", "'bulk'", id="account-stream"),
    pytest.param(CMPP_HEAD + '[[cmpp.numbers]]\naddress = "1069-0001"\nsender = "acme"\n',
                 "cmpp.numbers[0].address", "'1069-0001' is not 1-21 digits", id="number-dash"),
    pytest.param(CMPP_HEAD + '[[cmpp.numbers]]\naddress = "1069"\nsender = "a"\n' * 2,
                 "cmpp.numbers[1].address", "'1069' is already cmpp.numbers[0]",
                 id="number-duplicate"),
    pytest.param(CMPP_HEAD + '[[cmpp.numbers]]\naddress = "1069"\n', "cmpp.numbers[0].sender",
                 "is required", id="number-without-sender"),
    pytest.param(CMPP_HEAD + "window = 0\n", "cmpp.window", "0 is outside 1-10000",
                 id="window"),
    pytest.param(CMPP_HEAD + "workers = 65\n", "cmpp.workers", "65 is outside 1-64",
                 id="workers"),
    pytest.param(CMPP_HEAD + '[cmpp.confirmations]\nhelp = {}\n', "cmpp.confirmations.help",
                 "non-empty texts", id="confirmations-empty"),
    pytest.param('[cmpp]\nwindow = 16\n', "cmpp.listen", "is required", id="no-listen"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "key", "reason"), BAD_VALUES)
def test_bad_value_names_dotted_key(tmp_path: Path, text: str, key: str, reason: str) -> None:
    """Each bad value raises ConfigError naming the dotted key and, in the reason, the value."""
    path = write(tmp_path, text)
    assert_refused(path, key)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert reason in info.value.reason


def test_cmpp_senders_count_for_compliance(tmp_path: Path) -> None:
    """A [[compliance.senders]] table may name the sender of a CMPP account only."""
    text = (
        CMPP_HEAD
        + ACCOUNT
        + '[compliance]\ncancel_method = "require"\n'
        + '[[compliance.senders]]\nsender = "acme"\nsms_cancel_text = "回T退订"\n'
    )
    settings = load(write(tmp_path, text))
    assert settings.senders() == ["acme"]
    assert settings.compliance is not None
