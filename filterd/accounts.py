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

from filterd.config import SmtpAccount


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

    def authenticate(self, username: str, password: str) -> SmtpAccount | None:
        """The account whose login this is, or None (wrong name or password)."""
        account = self._by_name.get(username)
        expected = account.password if account is not None else None
        return account if password_matches(expected, password) else None

    def by_username(self, username: str) -> SmtpAccount | None:
        """The account with this login name, password or not (Postfix has checked it)."""
        return self._by_name.get(username)

    def by_address(self, address: str) -> SmtpAccount | None:
        """The account whose `networks` hold this client address, or None."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for network, account in self._networks:
            if ip.version == network.version and ip in network:
                return account
        return None


def password_matches(expected: str | None, given: str) -> bool:
    """Constant-time check; False when there is no password to match (an unknown name
    is compared all the same, so timing does not tell which names exist)."""
    ok = hmac.compare_digest(
        (expected or "\x00").encode("utf-8", "surrogateescape"),
        given.encode("utf-8", "surrogateescape"),
    )
    return bool(expected) and ok


class FailureBackoff:
    """Per-peer delay after failed logins: 0.5 s doubling to 30 s, forgotten after 15 min.

    A wrong password from a peer makes its next failures slower to answer, so
    guessing passwords costs time; a success clears the peer's record. At
    most `limit` peers are remembered (the oldest are forgotten first).
    """

    def __init__(
        self,
        *,
        first_s: float = 0.5,
        max_s: float = 30.0,
        forget_s: float = 900.0,
        limit: int = 10_000,
    ) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.forget_s = forget_s
        self.limit = limit
        self._failures: dict[str, tuple[int, float]] = {}

    def failed(self, peer: str, now: float) -> float:
        """Record a failure; return how long to wait before answering it."""
        count, last = self._failures.pop(peer, (0, now))
        if now - last > self.forget_s:
            count = 0
        count += 1
        self._failures[peer] = (count, now)
        while len(self._failures) > self.limit:
            del self._failures[next(iter(self._failures))]
        return float(min(self.first_s * 2 ** (count - 1), self.max_s))

    def delay(self, peer: str, now: float) -> float:
        """How long to wait before taking the peer's next attempt (0 without failures)."""
        count, last = self._failures.get(peer, (0, now))
        if count == 0 or now - last > self.forget_s:
            return 0.0
        return float(min(self.first_s * 2 ** (count - 1), self.max_s))

    def succeeded(self, peer: str) -> None:
        """Forget the peer's failures."""
        self._failures.pop(peer, None)

    def failures(self, peer: str) -> int:
        """Failures remembered for a peer."""
        return self._failures.get(peer, (0, 0.0))[0]
