"""What the policy service answers a request, sans-IO (pure): a ready reply, or a
recipient to screen first.

Decisions, at `protocol_state=RCPT` (every other state, and an empty request:
`DUNNO`, as Postfix's own example policy server does):

- the account comes from `sasl_username` (`AccountBook.by_username`), or,
  when that is empty or absent, from `client_address` (`by_address`); none →
  `replies.NO_ACCOUNT` (554);
- the recipient is admitted by the same rules as on the SMTP relay
  (`filterd.admission`: an email address, normalised) → else
  `replies.BAD_ADDRESS` (553) with admission's reason, the recipient echoed
  ASCII-safe (undecodable bytes and control characters as `?`);
- a recipient to screen (`Screen`) is then decided by `Service.screen`:
  `DUNNO` to deliver, else the exact reply text of `replies.for_decision`
  (550 refused / 550 no consent / 451 registry unavailable or quiet hours).

Replies are ready as bytes (`reply`): the common ones made once.
"""

from __future__ import annotations

from filterd import replies
from filterd.accounts import AccountBook
from filterd.admission import Refused, email_recipient
from filterd.model import Action, Address, Decision
from filterd.policy_wire import serialize_reply
from filterd.settings import SmtpAccount

DUNNO = "DUNNO"
DUNNO_REPLY = serialize_reply(DUNNO)
"""The reply to every request but a RCPT dropped or deferred."""
_REPLIES = {DUNNO: DUNNO_REPLY, replies.NO_ACCOUNT: serialize_reply(replies.NO_ACCOUNT)}


class Screen:
    """A RCPT request to decide: whose message, which recipient."""

    __slots__ = ("account", "address", "message_id", "recipient")

    def __init__(
        self, account: SmtpAccount, address: Address, recipient: str, message_id: str | None
    ) -> None:
        self.account = account
        self.address = address
        self.recipient = recipient
        """The recipient as Postfix sent it, for the reply text."""
        self.message_id = message_id


def find_account(request: dict[str, str], accounts: AccountBook) -> SmtpAccount | None:
    """The account of a request: by `sasl_username`, or else by `client_address`."""
    username = request.get("sasl_username")
    if username:
        return accounts.by_username(username)
    return accounts.by_address(request.get("client_address", ""))


def plan(
    request: dict[str, str], accounts: AccountBook, default_region: str | None
) -> str | Screen:
    """The action to answer at once, or the recipient to screen first."""
    state = request.get("protocol_state", "")
    if state != "RCPT" and state.upper() != "RCPT":
        return DUNNO
    account = find_account(request, accounts)
    if account is None:
        return replies.NO_ACCOUNT
    recipient = request.get("recipient", "")
    address = recipient_address(recipient, default_region)
    if isinstance(address, str):
        return address
    # the queue id goes into the log line and the audit entry: valid UTF-8 only
    return Screen(account, address, recipient, loggable(request.get("queue_id", "")) or None)


def recipient_address(recipient: str, default_region: str | None) -> Address | str:
    """The normalised email address of a recipient, or the 553 reply that refuses it
    (the SMTP relay's admission rules; the recipient echoed ASCII-safe)."""
    address = email_recipient(recipient, default_region)
    if isinstance(address, Refused):
        return replies.BAD_ADDRESS.format(address=address.shown, reason=address.reason)
    return address


def action_for(decision: Decision, recipient: str) -> str:
    """`DUNNO` to deliver, else the SMTP reply that drops or defers (replies.for_decision)."""
    if decision.action is Action.DELIVER:
        return DUNNO
    return replies.for_decision(decision, recipient) or DUNNO


def reply(action: str) -> bytes:
    """The bytes that answer `action` (the common ones made once)."""
    ready = _REPLIES.get(action)
    return ready if ready is not None else serialize_reply(action)


def loggable(text: str) -> str:
    """`text` with undecodable bytes (surrogate escapes) shown as U+FFFD."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
