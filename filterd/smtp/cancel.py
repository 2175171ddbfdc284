"""The way to cancel a relayed commercial email must carry ([compliance]
cancel_method), decided from its header (pure).

- A message with a `List-Unsubscribe` header is relayed as it is.
- Without one, by `cancel_method`:
  `add` → filterd adds `List-Unsubscribe` (the RFC 8058 https URL naming the
  recipient, and the `mailto:` form with `smtp.unsubscribe_domain`) and
  `List-Unsubscribe-Post`. The URL names one consumer, so a commercial
  transaction carries one recipient (452 4.5.3 to the second RCPT: the client
  sends the others in their own transactions, as RFC 5321 §4.5.3.1.10 lets it);
  a message that reaches DATA with several recipients anyway (a transactional
  account's message upgraded by its signals), or that already carries a
  DKIM-Signature (a header added now would break it), is refused as under
  `require`.
  `require` → refused at DATA: `550 5.7.1 commercial message has no
  List-Unsubscribe header`, each recipient audited as a drop with reason
  `no_cancel_method`.
  `off` → relayed as it is.
- Without a `[compliance]` table (method None) the behaviour of filterd before
  it: the headers are added only where filterd DKIM-signs the message itself
  and it has one recipient.
"""

from __future__ import annotations

import enum

from filterd.settings import CancelMethod

NO_LIST_UNSUBSCRIBE = "550 5.7.1 commercial message has no List-Unsubscribe header"
ONE_PER_MESSAGE = ": one recipient per message could be given one"
"""Added to the 550 under add when the message has several recipients (a transactional
account's message upgraded by its headers: its RCPTs were taken before)."""


class MailCancel(enum.Enum):
    """What the relay does about a commercial message's way to cancel."""

    KEEP = "keep"
    """Relay it as it is (it has one, or the rules ask for none)."""
    ADD = "add"
    """Add the one-click headers naming its one recipient."""
    REFUSE = "refuse"
    """Refuse it (550 5.7.1)."""


def mail_cancel(
    fields: dict[str, list[str]],
    method: CancelMethod | None,
    recipients: int,
    *,
    signing: bool,
) -> MailCancel:
    """The action for a commercial message with header `fields` (lower-cased names,
    signals.header_fields) and `recipients` recipients; `signing`: filterd signs
    relayed commercial mail ([dkim])."""
    if "list-unsubscribe" in fields:
        return MailCancel.KEEP
    signed = "dkim-signature" in fields
    if method is None:
        legacy = signing and not signed and recipients == 1
        return MailCancel.ADD if legacy else MailCancel.KEEP
    if method is CancelMethod.OFF:
        return MailCancel.KEEP
    if method is CancelMethod.REQUIRE or signed or recipients != 1:
        return MailCancel.REFUSE
    return MailCancel.ADD
