"""filterd.config.smpp: [smpp] with its upstream, accounts and MO numbers; bad
values name the dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.model import MessageClass
from filterd.settings import Settings, SmppAccount, SmppNumber, SmppUpstream
from tests.config_helpers import SMPP_HEAD, assert_refused, write


def test_reference_smpp(reference: Settings) -> None:
    """[smpp]: listen endpoint, the carrier upstream, one account and one MO number."""
    smpp = reference.smpp
    assert smpp is not None
    assert smpp.listen == ("127.0.0.1", 2775)
    assert smpp.upstream == SmppUpstream("127.0.0.1", 2776, "filterd", "secret1")
    assert smpp.accounts == (SmppAccount("promo", "chg-me-1", "acme", MessageClass.COMMERCIAL),)
    assert smpp.numbers == (SmppNumber("10690001", "acme"),)


BAD_VALUES = [
    pytest.param(
        SMPP_HEAD + '[smpp.upstream]\nhost = "127.0.0.1"\nport = 2776\nsystem_id = "f"\n'
        'password = "toolongpw"\n',
        "smpp.upstream.password",
        id="smpp-upstream-password",
    ),
    pytest.param(
        SMPP_HEAD
        + '[smpp.upstream]\nhost = "127.0.0.1"\nport = 70000\nsystem_id = "f"\npassword = "p"\n',
        "smpp.upstream.port",
        id="smpp-upstream-port",
    ),
    pytest.param(
        SMPP_HEAD + '[[smpp.numbers]]\nsender = "acme"\n',
        "smpp.numbers[0].address",
        id="smpp-number-without-address",
    ),
]


@pytest.mark.parametrize(("text", "key"), BAD_VALUES)
def test_bad_value_names_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    """Each bad value raises ConfigError whose key and message name the dotted key."""
    path = write(tmp_path, text)
    assert_refused(path, key)
