"""Feedback reports (RFC 5965) in the shapes mailbox providers send, built by hand
from the RFC's example and what providers document: shared by the tests of the
report reader (tests/test_smtp_feedback.py), the complaint use case
(tests/test_smtp_complaints.py) and DATA on the unsubscribe listener
(tests/test_smtp_data.py)."""

from __future__ import annotations

import base64

BOUNDARY = "part1_13d.2e68ed54_boundary"
REPORT_TYPE = f'multipart/report; report-type=feedback-report;\r\n\tboundary="{BOUNDARY}"'


def original(list_unsubscribe: str | None, *, to: str = "jane@example.com") -> bytes:
    """A commercial message as filterd relayed it: `list_unsubscribe` is the value of
    its List-Unsubscribe field (None: it has none)."""
    header = f"List-Unsubscribe: {list_unsubscribe}\r\n" if list_unsubscribe else ""
    return (
        "Received: from filterd.test (filterd.test [192.0.2.25])\r\n"
        "\tby mx.mailbox.test with ESMTPS id 4Qx; Mon, 07 Dec 2026 09:59:58 +0000\r\n"
        "DKIM-Signature: v=1; a=rsa-sha256; d=acme.test; s=mail; h=from:to:subject:\r\n"
        "\tlist-unsubscribe:list-unsubscribe-post; bh=abc=; b=def=\r\n"
        "From: Acme Shop <shop@acme.test>\r\n"
        f"To: {to}\r\n"
        "Subject: Winter sale\r\n"
        "Date: Mon, 07 Dec 2026 09:59:57 +0000\r\n"
        "Message-ID: <sale-1@acme.test>\r\n"
        f"{header}"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Everything half price.\r\n"
    ).encode()


def report(
    returned: bytes,
    *,
    fields: str,
    returned_type: str = "message/rfc822",
    returned_encoding: str | None = None,
    head: str = "",
    content_type: str = REPORT_TYPE,
    text: str = "This is an email abuse report for an email message received from IP\r\n"
    "192.0.2.25 on Mon, 07 Dec 2026 09:59:58 +0000.\r\n",
) -> bytes:
    """A three-part report: human-readable text, the machine-readable `fields`, and
    `returned` (the original or its headers) as `returned_type`."""
    body = returned
    encoding = ""
    if returned_encoding == "base64":
        body = base64.encodebytes(returned).replace(b"\n", b"\r\n")
        encoding = "Content-Transfer-Encoding: base64\r\n"
    return (
        (
            f"From: <feedback@mailbox.test>\r\nTo: <fbl@acme.test>\r\n"
            f"Subject: FW: Winter sale\r\nDate: Mon, 07 Dec 2026 10:05:00 +0000\r\n{head}"
            f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n"
            f"This is a multi-part message in MIME format.\r\n\r\n"
            f"--{BOUNDARY}\r\nContent-Type: text/plain; charset=us-ascii\r\n"
            f"Content-Transfer-Encoding: 7bit\r\n\r\n{text}\r\n"
            f"--{BOUNDARY}\r\nContent-Type: message/feedback-report\r\n\r\n{fields}\r\n"
            f"--{BOUNDARY}\r\nContent-Type: {returned_type}\r\n"
            f"Content-Disposition: inline\r\n{encoding}\r\n"
        ).encode()
        + body
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


RFC5965_FIELDS = (
    "Feedback-Type: abuse\r\n"
    "User-Agent: SomeGenerator/1.0\r\n"
    "Version: 1\r\n"
    "Original-Mail-From: <bounce@acme.test>\r\n"
    "Original-Rcpt-To: <jane@example.com>\r\n"
    "Arrival-Date: Mon, 07 Dec 2026 09:59:58 +0000\r\n"
    "Reporting-MTA: dns; mail.mailbox.test\r\n"
    "Source-IP: 192.0.2.25\r\n"
    "Authentication-Results: mail.mailbox.test;\r\n"
    "\tspf=pass smtp.mail=bounce@acme.test\r\n"
    "Reported-Domain: acme.test\r\n"
    "Removal-Recipient: jane@example.com\r\n"
)
"""The machine-readable part of RFC 5965's example (Appendix B), about our message."""

YAHOO_FIELDS = (
    "Feedback-Type: abuse\r\n"
    "User-Agent: Yahoo!-Mail-Feedback/2.0\r\n"
    "Version: 0.1\r\n"
    "Original-Mail-From: <bounce@acme.test>\r\n"
    "Original-Rcpt-To: <redacted>\r\n"
    "Received-Date: Mon, 07 Dec 2026 01:59:58 -0800\r\n"
    "Source-IP: 192.0.2.25\r\n"
    "Authentication-Results: mta4003.mail.gq1.yahoo.com  from=acme.test;\r\n"
    "\tdomainkeys=neutral (no sig);  from=acme.test; dkim=pass (ok)\r\n"
    "Reported-Domain: acme.test\r\n"
)
"""Yahoo's complaint feedback loop: the recipient redacted, a DKIM-signed original;
here with Received-Date, the historic name of Arrival-Date (RFC 5965's registry
of report fields) that older report generators still write."""

MICROSOFT_FIELDS = (
    "Feedback-Type: abuse\r\n"
    "User-Agent: Hotmail FBL\r\n"
    "Version: 0.1\r\n"
    "Arrival-Date: Mon, 7 Dec 2026 09:59:58 GMT\r\n"
    "Source-IP: 2001:db8::25\r\n"
    "Original-Rcpt-To: jane@example.com\r\n"
)
"""Microsoft's junk mail reporting program in its ARF form: the recipient named in
the returned original's X-HmXmrOriginalRecipient, an IPv6 source."""


def microsoft_original(list_unsubscribe: str) -> bytes:
    """The original as Microsoft returns it (its recipient in X-HmXmrOriginalRecipient)."""
    return b"X-HmXmrOriginalRecipient: <jane@example.com>\r\n" + original(list_unsubscribe)


def one_click(public_url: str, token: str, domain: str, spelt: str) -> str:
    """The List-Unsubscribe value filterd adds (https first, then mailto)."""
    return f"<{public_url}/unsubscribe/{token}>,\r\n <mailto:unsubscribe+{spelt}@{domain}>"
