"""filterd.smtp.cancel: what the relay does about a commercial email's way to cancel,
by its header, [compliance] cancel_method and its number of recipients."""

from __future__ import annotations

import pytest

from filterd.settings import CancelMethod
from filterd.smtp.cancel import MailCancel, mail_cancel
from filterd.smtp.signals import header_fields

PLAIN = b"From: a@acme.test\r\nSubject: sale\r\n\r\nbody\r\n"
WITH_LU = b"From: a@acme.test\r\nList-Unsubscribe : <https://acme.test/u>\r\n\r\nbody\r\n"
SIGNED = b"DKIM-Signature: v=1; d=acme.test\r\nFrom: a@acme.test\r\n\r\nbody\r\n"
ADD, REQUIRE, OFF = CancelMethod.ADD, CancelMethod.REQUIRE, CancelMethod.OFF
KEEP, ADDS, REFUSE = MailCancel.KEEP, MailCancel.ADD, MailCancel.REFUSE


@pytest.mark.parametrize(
    ("message", "method", "recipients", "signing", "action"),
    [
        (WITH_LU, ADD, 1, False, KEEP),
        (WITH_LU, REQUIRE, 3, False, KEEP),
        (PLAIN, ADD, 1, False, ADDS),
        (PLAIN, ADD, 1, True, ADDS),
        (PLAIN, ADD, 2, False, REFUSE),
        (SIGNED, ADD, 1, False, REFUSE),
        (PLAIN, REQUIRE, 1, True, REFUSE),
        (PLAIN, OFF, 1, True, KEEP),
        (SIGNED, OFF, 1, False, KEEP),
        (PLAIN, None, 1, True, ADDS),
        (PLAIN, None, 1, False, KEEP),
        (PLAIN, None, 2, True, KEEP),
        (SIGNED, None, 1, True, KEEP),
    ],
)
def test_the_action_for_each_case(
    message: bytes, method: CancelMethod | None, recipients: int, signing: bool, action: MailCancel
) -> None:
    """A message with List-Unsubscribe (even written with a space before the colon) is
    kept; without one: add adds the headers for one recipient and refuses a message
    with several or one already DKIM-signed (a header added would break it); require
    refuses; off keeps; without [compliance] (None) the headers are added only where
    filterd signs a one-recipient message itself, as before the table existed."""
    assert mail_cancel(header_fields(message), method, recipients, signing=signing) is action
