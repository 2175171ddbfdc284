"""Client accounts (filterd/accounts.py): SMTP logins checked against
`[[smtp.accounts]]`, Postfix's `sasl_username`, and accounts chosen by the
client's address through their `networks` (the most specific network wins)."""

from __future__ import annotations

import ipaddress

import pytest

from filterd.accounts import CLIENT_CACHE, AccountBook
from filterd.model import MessageClass
from filterd.settings import SmtpAccount

COMMERCIAL, TRANSACTIONAL = MessageClass.COMMERCIAL, MessageClass.TRANSACTIONAL


def nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Networks as the config module builds them."""
    return tuple(ipaddress.ip_network(c) for c in cidrs)


NEWSLETTER = SmtpAccount("newsletter", "acme", COMMERCIAL, password="pw-news")  # noqa: S106
RECEIPTS = SmtpAccount("receipts", "acme", TRANSACTIONAL, password="pw-rcpt")  # noqa: S106
WIDE = SmtpAccount("wide", "w", COMMERCIAL, networks=nets("10.0.0.0/8"))
OFFICE = SmtpAccount("office", "o", COMMERCIAL, networks=nets("10.1.2.0/24", "192.0.2.0/28"))
HOST = SmtpAccount("host", "h", TRANSACTIONAL, networks=nets("10.1.2.7/32"))
V6 = SmtpAccount("v6", "six", COMMERCIAL, networks=nets("2001:db8::/32"))
V6_HOST = SmtpAccount("v6-host", "six-host", COMMERCIAL, networks=nets("2001:db8::25/128"))
BOTH = SmtpAccount(
    "both",
    "b",
    COMMERCIAL,
    password="pw-both",  # noqa: S106
    networks=nets("198.51.100.0/24"),
)
ALL = [NEWSLETTER, RECEIPTS, WIDE, OFFICE, HOST, V6, V6_HOST, BOTH]


@pytest.fixture
def book() -> AccountBook:
    """Every account above."""
    return AccountBook(ALL)


def test_login_with_right_password(book: AccountBook) -> None:
    """The right user name and password give that account."""
    assert book.authenticate("newsletter", "pw-news") is NEWSLETTER
    assert book.authenticate("receipts", "pw-rcpt") is RECEIPTS
    assert book.authenticate("both", "pw-both") is BOTH


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("newsletter", "pw-rcpt"),  # another account's password
        ("newsletter", "pw-news "),
        ("newsletter", "PW-NEWS"),
        ("newsletter", ""),
        ("Newsletter", "pw-news"),  # names are case-sensitive
        ("nobody", "pw-news"),
        ("nobody", ""),
        ("", ""),
    ],
)
def test_wrong_password_or_unknown_user(book: AccountBook, username: str, password: str) -> None:
    """A wrong password, an unknown user or an empty login gives no account."""
    assert book.authenticate(username, password) is None


@pytest.mark.parametrize("password", ["", "\x00", "anything"])
def test_network_account_cannot_log_in(book: AccountBook, password: str) -> None:
    """An account without a password (chosen by network) cannot log in, not even with an
    empty password; Postfix's sasl_username (checked by Postfix) still finds it by name."""
    assert book.authenticate("office", password) is None
    assert book.by_username("office") is not None


def test_by_username(book: AccountBook) -> None:
    """Postfix's sasl_username (already authenticated by Postfix) finds the account by name."""
    assert book.by_username("newsletter") is NEWSLETTER
    assert book.by_username("both") is BOTH
    assert book.by_username("nobody") is None
    assert book.by_username("") is None


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.1.2.7", HOST),  # /32 beats the /24 and the /8 around it
        ("10.1.2.8", OFFICE),  # /24 beats the /8
        ("10.1.2.255", OFFICE),
        ("10.1.3.1", WIDE),
        ("10.255.255.255", WIDE),
        ("192.0.2.15", OFFICE),  # an account's second network
        ("192.0.2.16", None),
        ("198.51.100.9", BOTH),  # password accounts may have networks too
        ("2001:db8::25", V6_HOST),
        ("2001:db8::26", V6),
        ("2001:db9::1", None),
        ("11.0.0.1", None),
        ("127.0.0.1", None),
    ],
)
def test_most_specific_network_wins(address: str, expected: SmtpAccount | None) -> None:
    """The account whose network holds the address most specifically, whatever the order
    of the accounts in the config."""
    assert AccountBook(ALL).by_address(address) is expected
    assert AccountBook(list(reversed(ALL))).by_address(address) is expected


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("::ffff:10.1.2.7", HOST),
        ("::ffff:10.1.2.8", OFFICE),
        ("::FFFF:10.9.9.9", WIDE),
        ("::ffff:192.0.2.200", None),
        ("::a01:207", None),  # IPv4-compatible, not mapped: an IPv6 address
        ("fe80::1%eth0", None),
        ("2001:db8::25%eth0", V6_HOST),  # a zone index is ignored
    ],
)
def test_ipv4_mapped_and_scoped_addresses(
    book: AccountBook, address: str, expected: SmtpAccount | None
) -> None:
    """An IPv4-mapped IPv6 client address (a dual-stack listener) matches IPv4 networks;
    a zone index is ignored."""
    assert book.by_address(address) is expected


@pytest.mark.parametrize(
    "address", ["", "unknown", "10.1.2", "10.1.2.7.1", "10.1.2.7/32", "host.example", " 10.1.2.7"]
)
def test_invalid_client_address(book: AccountBook, address: str) -> None:
    """Anything that is not an IP address (Postfix may say `unknown`) finds no account."""
    assert book.by_address(address) is None


def test_empty_book() -> None:
    """Without accounts nobody logs in and no address matches."""
    book = AccountBook([])
    assert book.authenticate("newsletter", "pw-news") is None
    assert book.by_username("newsletter") is None
    assert book.by_address("10.1.2.7") is None


def test_remembered_answers_follow_a_reload() -> None:
    """by_address remembers its answers, a reload (replace) forgets them: an address
    asked again gets the new accounts' answer, and a full memory starts afresh without
    changing any answer."""
    book = AccountBook([WIDE])
    assert [book.by_address("10.1.2.7") for _ in range(2)] == [WIDE, WIDE]
    book.replace([HOST])
    assert book.by_address("10.1.2.7") is HOST
    assert book.by_address("10.1.2.8") is None
    for index in range(CLIENT_CACHE + 5):
        assert book.by_address(f"10.1.{index // 250}.{index % 250}") is (
            HOST if index == 2 * 250 + 7 else None
        )
    assert book.by_address("10.1.2.7") is HOST
