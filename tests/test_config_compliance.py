"""filterd.config.compliance: [compliance] and [[compliance.senders]]: the cancel
method, quiet hours, the default time zone, the senders' signatures and cancel texts;
bad values name the dotted key and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.config.load import load
from filterd.errors import ConfigError
from filterd.quiet_hours import parse_window
from filterd.settings import CancelMethod, SenderCompliance, Settings
from tests.config_helpers import HTTP_HEAD, SMTP_ACCOUNT, SMTP_HEAD, write

ACME = (
    '[[compliance.senders]]\nsender = "acme"\nsignature = "【Acme】"\nsms_cancel_text = "回T退订"\n'
)


def test_reference_config_has_the_compliance_table(reference: Settings) -> None:
    """The reference config carries [compliance] with the defaults: add, no quiet hours
    (so that trying it out works at any hour; the comment shows 21:00-08:00),
    Asia/Shanghai, and acme's signature and cancel text."""
    assert reference.compliance is not None
    assert reference.compliance.cancel_method is CancelMethod.ADD
    assert reference.compliance.quiet_hours is None
    assert reference.compliance.time_zone == "Asia/Shanghai"
    assert reference.compliance.rules("acme") == SenderCompliance("acme", "【Acme】", "回T退订")


def test_without_the_table_nothing_applies(tmp_path: Path) -> None:
    """A config written before [compliance] existed keeps its behaviour: compliance None."""
    assert load(write(tmp_path, HTTP_HEAD)).compliance is None


def test_defaults_with_an_empty_table(tmp_path: Path) -> None:
    """An empty [compliance] table: add, no quiet hours, Asia/Shanghai, no senders."""
    settings = load(write(tmp_path, HTTP_HEAD + "[compliance]\n"))
    assert settings.compliance is not None
    assert settings.compliance.cancel_method is CancelMethod.ADD
    assert settings.compliance.quiet_hours is None
    assert settings.compliance.time_zone == "Asia/Shanghai"
    assert settings.compliance.senders == ()
    assert settings.compliance.rules("acme") is None


def test_every_key_read(tmp_path: Path) -> None:
    """Every key: method, window, zone, and the senders' texts (trimmed)."""
    text = (
        '[compliance]\ncancel_method = "require"\nquiet_hours = "20:00-08:00"\n'
        'time_zone = "America/New_York"\n' + ACME + '[[compliance.senders]]\nsender = "beta"\n'
        'sms_cancel_text = " Reply STOP to end "\n'
    )
    settings = load(write(tmp_path, text))
    assert settings.compliance is not None
    assert settings.compliance.cancel_method is CancelMethod.REQUIRE
    assert settings.compliance.quiet_hours == parse_window("20:00-08:00")
    assert settings.compliance.time_zone == "America/New_York"
    assert settings.compliance.rules("beta") == SenderCompliance("beta", None, "Reply STOP to end")


BAD_VALUES = [
    pytest.param(
        HTTP_HEAD + '[compliance]\ncancel_method = "append"\n',
        "compliance.cancel_method",
        "'append'",
        id="method",
    ),
    pytest.param(
        '[compliance]\ncancel_method = "add"\n',
        "compliance.cancel_method",
        "[http]",
        id="add-without-http",
    ),
    pytest.param(
        HTTP_HEAD + '[compliance]\nquiet_hours = "21:00-8"\n',
        "compliance.quiet_hours",
        "21:00-8",
        id="window",
    ),
    pytest.param(
        HTTP_HEAD + '[compliance]\nquiet_hours = "25:00-08:00"\n',
        "compliance.quiet_hours",
        "25:00-08:00",
        id="window-hour",
    ),
    pytest.param(
        HTTP_HEAD + '[compliance]\ntime_zone = "Asia/Beijing"\n',
        "compliance.time_zone",
        "Asia/Beijing",
        id="zone",
    ),
    pytest.param(
        HTTP_HEAD + '[compliance]\n[[compliance.senders]]\nsender = "acme"\n'
        'sms_cancel_text = "点击链接退出"\n',
        "compliance.senders[0].sms_cancel_text",
        "点击链接退出",
        id="cancel-text-without-keyword",
    ),
    pytest.param(
        HTTP_HEAD + "[compliance]\n" + ACME + ACME,
        "compliance.senders[1].sender",
        "'acme'",
        id="duplicate-sender",
    ),
    pytest.param(
        HTTP_HEAD + '[compliance]\n[[compliance.senders]]\nsender = "acme"\nsignature = ""\n',
        "compliance.senders[0].signature",
        "''",
        id="empty-signature",
    ),
    pytest.param(
        HTTP_HEAD + '[compliance]\n[[compliance.senders]]\nsignature = "【Acme】"\n',
        "compliance.senders[0].sender",
        "required",
        id="no-sender",
    ),
    pytest.param(
        HTTP_HEAD + '[compliance]\n[[compliance.senders]]\nsender = "acme"\nsignatur = "x"\n',
        "compliance.senders[0].signatur",
        "unknown key",
        id="typo",
    ),
]


@pytest.mark.parametrize(("text", "key", "shown"), BAD_VALUES)
def test_bad_value_names_dotted_key_and_value(
    tmp_path: Path, text: str, key: str, shown: str
) -> None:
    """Each bad value raises ConfigError (check-config's exit 2) naming the dotted key
    and showing the offending value."""
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    assert info.value.key == key
    assert shown in str(info.value)


def test_cancel_text_may_name_a_configured_keyword(tmp_path: Path) -> None:
    """The cancel text is checked against the [keywords] opt_out list of the same file:
    an operator's own keyword counts."""
    text = (
        '[keywords]\nopt_out = ["BASTA"]\n' + HTTP_HEAD + "[compliance]\n"
        '[[compliance.senders]]\nsender = "acme"\nsms_cancel_text = "Rispondi BASTA"\n'
    )
    settings = load(write(tmp_path, text))
    assert settings.compliance is not None
    assert settings.compliance.rules("acme") == SenderCompliance("acme", None, "Rispondi BASTA")


def test_a_sender_table_must_name_a_known_sender(tmp_path: Path) -> None:
    """With accounts configured, a [[compliance.senders]] table for a sender no account
    or number has (a typo) is refused naming it and the known senders, instead of
    silently leaving that sender's messages unchecked."""
    text = (
        HTTP_HEAD + SMTP_HEAD + SMTP_ACCOUNT + 'password = "pw"\n[compliance]\n'
        "[[compliance.senders]]\n"
        'sender = "acmee"\nsignature = "【Acme】"\n'
    )
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    assert info.value.key == "compliance.senders[0].sender"
    assert "'acmee'" in str(info.value)
    assert "acme" in str(info.value).split("senders are:")[1]
