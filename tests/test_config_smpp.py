"""filterd.config.smpp: [smpp] with its upstream, accounts and MO numbers; bad
values name the dotted key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from filterd.config.load import load
from filterd.errors import ConfigError
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


NUMBER = '[[smpp.numbers]]\naddress = "{}"\nsender = "acme"\n'


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("", "'' is not 1-20 printable ASCII characters"),
        ("1069 0001", "'1069 0001' is not 1-20 printable ASCII characters"),
        ("1" * 21, f"'{'1' * 21}' is not 1-20 printable ASCII characters"),
        ("短号", "'短号' is not 1-20 printable ASCII characters"),
    ],
)
def test_number_that_is_no_smpp_address_is_refused(
    tmp_path: Path, address: str, reason: str
) -> None:
    """An [[smpp.numbers]] address that cannot be an SMPP destination_addr (empty, with a
    space, over 20 characters, not ASCII) is refused, naming the key and the value."""
    path = write(tmp_path, SMPP_HEAD + NUMBER.format(address))
    assert_refused(path, "smpp.numbers[0].address")
    with pytest.raises(ConfigError, match=re.escape(reason)):
        load(path)


def test_number_listed_twice_is_refused(tmp_path: Path) -> None:
    """The same [[smpp.numbers]] address twice (its replies would belong to whichever came
    last) is refused, naming the second entry and the first."""
    path = write(tmp_path, SMPP_HEAD + NUMBER.format("10690001") + NUMBER.format("10690001"))
    assert_refused(path, "smpp.numbers[1].address")
    with pytest.raises(ConfigError, match=re.escape("'10690001' is already smpp.numbers[0]")):
        load(path)
