"""Client accounts of the SMTP relay and the Postfix policy service (pure).

An account is chosen by its SMTP login (AUTH PLAIN/LOGIN, or Postfix's
`sasl_username`) or, for a tool that cannot AUTH, by the client's address
falling into one of the account's `networks` (the most specific network
wins, like a routing table). Password checks take constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence

from filterd.settings import SmtpAccount

CLIENT_CACHE = 1024
"""Client addresses whose account `by_address` remembers (forgotten all at once when full)."""


class AccountBook:
    """Look-ups over the configured `[[smtp.accounts]]`."""

    def __init__(self, accounts: Sequence[SmtpAccount]) -> None:
        self.replace(accounts)

    def replace(self, accounts: Sequence[SmtpAccount]) -> None:
        """Use a new set of accounts from now on (a reload); sessions keep theirs."""
        networks = [(net, a) for a in accounts for net in a.networks]
        # most specific first: a /32 beats the /24 around it
        self._networks = sorted(networks, key=lambda item: -item[0].prefixlen)
        self._by_name = {a.username: a for a in accounts}
        self._by_client: dict[str, SmtpAccount | None] = {}

    def authenticate(self, username: str, password: str) -> SmtpAccount | None:
        """The account whose login this is, or None (wrong name or password)."""
        account = self._by_name.get(username)
        expected = account.password if account is not None else None
        return account if password_matches(expected, password) else None

    def by_username(self, username: str) -> SmtpAccount | None:
        """The account with this login name, password or not (Postfix has checked it)."""
        return self._by_name.get(username)

    def by_address(self, address: str) -> SmtpAccount | None:
        """The account whose `networks` hold this client address, or None. The answers
        are remembered for up to CLIENT_CACHE addresses (then forgotten at once): one
        Postfix asks about the same few clients over and over, and reading an IP
        address costs microseconds."""
        if not self._networks:
            return None
        if address in self._by_client:
            return self._by_client[address]
        if len(self._by_client) >= CLIENT_CACHE:
            self._by_client.clear()
        found = self._by_client[address] = self._in_networks(address)
        return found

    def _in_networks(self, address: str) -> SmtpAccount | None:
        """by_address, worked out."""
        ip = client_ip(address)
        if ip is None:
            return None
        for network, account in self._networks:
            if ip.version == network.version and ip in network:
                return account
        return None


def client_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client address as an IP (an IPv4-mapped IPv6 address as IPv4, a zone id
    dropped), or None when it is not one."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def password_matches(expected: str | None, given: str) -> bool:
    """Constant-time check; False when there is no password to match (an unknown name
    is compared all the same, so timing does not tell which names exist)."""
    ok = hmac.compare_digest(
        (expected or "\x00").encode("utf-8", "surrogateescape"),
        given.encode("utf-8", "surrogateescape"),
    )
    return bool(expected) and ok
