"""filterctl's commands (filterd/cli/commands.py) through the real console script,
against its embedded registry: refuse/check/consent, request expiry, status, audit,
export, invalid addresses, unsubscribe-url."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis

from filterd.model import Channel
from filterd.secret import load_or_create
from filterd.storage.embedded import EmbeddedServer
from filterd.tokens import TokenError
from tests.cli_helpers import (
    PHONE_NATIONAL,
    PHONE_RAW,
    consumer_of,
    ctl,
    verify_url,
)


def test_refuse_check_consent_cycle(home: Path) -> None:
    """A global refusal drops (exit 1, reason refused); consent without evidence is refused
    (exit 2, nothing written); consent with evidence makes check deliver (exit 0)."""
    assert ctl(home, "refuse", PHONE_RAW, "--all-senders").returncode == 0
    check = ctl(home, "check", PHONE_NATIONAL, "--sender", "acme")
    assert (check.returncode, check.stdout) == (1, "drop refused\n")
    plain = ctl(home, "consent", PHONE_NATIONAL, "--sender", "acme")
    assert plain.returncode == 2
    assert "refusal on record" in plain.stderr
    assert plain.stdout == ""
    status = json.loads(ctl(home, "--json", "status", PHONE_NATIONAL).stdout)
    assert [f["fact"] for f in status] == ["refusal"]
    ok = ctl(home, "consent", PHONE_NATIONAL, "--sender", "acme", "--evidence", "signed form #12")
    assert ok.returncode == 0, ok.stderr
    check = ctl(home, "check", PHONE_NATIONAL, "--sender", "acme")
    assert (check.returncode, check.stdout) == (0, "deliver\n")
    other = ctl(home, "check", PHONE_NATIONAL, "--sender", "beta")
    assert (other.returncode, other.stdout) == (1, "drop refused\n")


def test_check_json_and_no_consent(home: Path) -> None:
    """check --json prints one object with decision and reason; no facts → no_consent."""
    result = ctl(home, "check", "jane@example.com", "--sender", "acme", "--json")
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert (document["decision"], document["reason"]) == ("drop", "no_consent")
    transactional = ctl(home, "check", "jane@example.com", "--sender", "acme",
                        "--class", "transactional", "--json")  # fmt: skip
    assert transactional.returncode == 0
    assert json.loads(transactional.stdout)["decision"] == "deliver"


def test_request_expiry_and_status(home: Path) -> None:
    """A request permits until its TTL; status --json lists it newest first with expires_at."""
    assert (
        ctl(home, "request", "jane@example.com", "--sender", "acme", "--ttl", "1d").returncode == 0
    )
    assert ctl(home, "check", "jane@example.com", "--sender", "acme").returncode == 0
    ctl(home, "refuse", "jane@example.com", "--sender", "beta")
    status = json.loads(ctl(home, "status", "jane@example.com", "--json").stdout)
    assert [f["fact"] for f in status] == ["refusal", "request"]
    assert status[1]["expires_at"] is not None
    only_acme = json.loads(
        ctl(home, "status", "jane@example.com", "--sender", "acme", "--json").stdout
    )
    assert [f["fact"] for f in only_acme] == ["request"]


@pytest.mark.parametrize("bad", ["12345", "+86 138", "not-a-number", "jane@", "a@b", "@x.com"])
def test_invalid_address_exits_2_and_writes_nothing(home: Path, bad: str) -> None:
    """An invalid phone or email: one-line error naming it, exit 2, nothing written."""
    result = ctl(home, "refuse", bad, "--all-senders")
    assert result.returncode == 2
    assert repr(bad) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
    stats = json.loads(ctl(home, "stats", "--json").stdout)
    assert (stats["consumers"], stats["audit_entries"]) == (0, 0)


def test_audit_and_export(home: Path) -> None:
    """Facts written one by one are audited newest first; export lists hashed consumers."""
    ctl(home, "consent", "jane@example.com", "--sender", "acme", "--source", "web")
    ctl(home, "refuse", "+8613800138000", "--sender", "acme")
    audit = json.loads(ctl(home, "audit", "--json").stdout)
    assert [e["event"] for e in audit] == ["refusal", "consent"]
    mine = json.loads(ctl(home, "audit", "--to", "jane@example.com", "--json").stdout)
    assert [e["event"] for e in mine] == ["consent"]
    assert len(json.loads(ctl(home, "audit", "--limit", "1", "--json").stdout)) == 1
    export = ctl(home, "export")
    lines = export.stdout.strip().splitlines()
    assert lines[0].startswith("consumer,fact,sender,channel,created_at")
    assert len(lines) == 3
    assert "jane" not in export.stdout
    assert "13800138000" not in export.stdout
    jsonl = ctl(home, "export", "--format", "jsonl", "--sender", "acme").stdout.splitlines()
    assert sorted(json.loads(line)["fact"] for line in jsonl) == ["consent", "refusal"]


def test_shares_a_running_embedded_server_and_stores_no_raw_address(home: Path) -> None:
    """filterctl uses an embedded server another process holds (and leaves it running);
    nothing in it is a raw phone number or email."""
    server = EmbeddedServer(home / "var")
    server.acquire()
    try:
        ctl(home, "refuse", PHONE_RAW, "--all-senders", "--evidence", "said STOP")
        ctl(home, "consent", "Jane.Doe@Example.com", "--sender", "acme",
            "--evidence", "form for jane.doe@example.com")  # fmt: skip
        assert server.alive()
        client = redis.Redis(unix_socket_path=str(server.socket_path))
        blob = []
        for key in client.scan_iter():
            blob.append(key)
            kind = client.type(key)
            if kind == b"hash":
                blob += [b for pair in client.hgetall(key).items() for b in pair]
            elif kind == b"stream":
                blob += [
                    b for _, entry in client.xrange(key) for pair in entry.items() for b in pair
                ]
        client.close()
        everything = b"\n".join(blob)
        assert b"fd:audit" in everything
        for raw in (b"8613800138000", b"13800138000", b"jane.doe@example.com", b"Jane.Doe"):
            assert raw not in everything
    finally:
        server.release()
    assert not server.alive()


def test_unsubscribe_url_prints_only_the_url(http_home: Path) -> None:
    """unsubscribe-url prints the bare URL under public_url and nothing else; its token
    verifies with the registry secret to (acme, email, the consumer's hash) and holds no
    raw address; the registry server is never started."""
    result = ctl(http_home, "unsubscribe-url", "Jane.Doe@Example.com", "--sender", "acme")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")
    url = result.stdout.removesuffix("\n")
    assert "\n" not in url
    assert " " not in url
    wanted = verify_url(http_home, url)
    assert (wanted.sender, wanted.channel) == ("acme", Channel.EMAIL)
    assert wanted.consumer == consumer_of(http_home, "jane.doe@example.com")
    assert "jane" not in url.lower()
    assert "example" not in url.lower()
    assert not EmbeddedServer(http_home / "var").alive()
    assert not (http_home / "var" / "registry.sock").exists()


def test_unsubscribe_url_for_a_phone_number(http_home: Path) -> None:
    """A national number (default region CN) gets an sms token for its E.164 consumer."""
    result = ctl(http_home, "unsubscribe-url", PHONE_NATIONAL, "--sender", "acme",
                 "--channel", "sms")  # fmt: skip
    assert result.returncode == 0, result.stderr
    wanted = verify_url(http_home, result.stdout.strip())
    assert wanted.channel is Channel.SMS
    assert wanted.consumer == consumer_of(http_home, "+8613800138000")
    assert PHONE_NATIONAL not in result.stdout


def test_unsubscribe_url_json(http_home: Path) -> None:
    """--json prints one object whose "url" is the URL."""
    result = ctl(http_home, "--json", "unsubscribe-url", "jane@example.com", "--sender", "acme")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert verify_url(http_home, document["url"]).sender == "acme"
    assert document["sender"] == "acme"
    assert document["channel"] == "email"


def test_unsubscribe_url_unknown_sender_exits_2(http_home: Path) -> None:
    """A sender no account or number names: exit 2, the name on stderr, nothing on stdout."""
    result = ctl(http_home, "unsubscribe-url", "jane@example.com", "--sender", "gamma")
    assert result.returncode == 2
    assert "'gamma'" in result.stderr
    assert result.stdout == ""


def test_unsubscribe_url_without_http_exits_2(home: Path) -> None:
    """Without an [http] section (no public_url) unsubscribe-url exits 2 naming [http]."""
    result = ctl(home, "unsubscribe-url", "jane@example.com", "--sender", "acme")
    assert result.returncode == 2
    assert "http" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["jane@", "--sender", "acme"],
        ["12345", "--sender", "acme"],
        ["jane@example.com", "--sender", "acme", "--channel", "sms"],
        ["jane@example.com"],
    ],
    ids=["bad-email", "bad-phone", "channel-mismatch", "no-sender"],
)
def test_unsubscribe_url_bad_input_exits_2(http_home: Path, args: list[str]) -> None:
    """An invalid address, a --channel that does not fit it or no --sender: exit 2, one
    diagnostic on stderr, nothing on stdout."""
    result = ctl(http_home, "unsubscribe-url", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip()
    if args[0] in ("jane@", "12345"):
        assert repr(args[0]) in result.stderr


def test_unsubscribe_url_needs_no_registry_server(http_home: Path) -> None:
    """With the registry URL pointing nowhere, unsubscribe-url still works (secret only)."""
    config = http_home / "filterd.toml"
    config.write_text(config.read_text().replace('url = "embedded"', 'url = "redis://127.0.0.1:1"'))
    result = ctl(http_home, "unsubscribe-url", "jane@example.com", "--sender", "acme")
    assert result.returncode == 0, result.stderr
    assert verify_url(http_home, result.stdout.strip()).sender == "acme"


def test_unsubscribe_url_signs_with_token_secret_file(http_home: Path) -> None:
    """With [http] token_secret_file, that key (created 0600 on first use) signs the token,
    not the key derived from the registry secret."""
    config = http_home / "filterd.toml"
    config.write_text(
        config.read_text().replace("[http]\n", '[http]\ntoken_secret_file = "var/token.key"\n')
    )
    result = ctl(http_home, "unsubscribe-url", "jane@example.com", "--sender", "acme")
    assert result.returncode == 0, result.stderr
    token_key = load_or_create(http_home / "var" / "token.key")
    assert (http_home / "var" / "token.key").stat().st_mode & 0o777 == 0o600
    assert verify_url(http_home, result.stdout.strip(), key=token_key).sender == "acme"
    with pytest.raises(TokenError):
        verify_url(http_home, result.stdout.strip())


def test_check_json_shows_the_evidence_of_its_basis(home: Path) -> None:
    """check --json's basis is the fact that settled the decision as status shows it: with
    its source and evidence (not null)."""
    ctl(home, "refuse", PHONE_RAW, "--all-senders", "--source", "call", "--evidence", "said STOP")
    refused = ctl(home, "--json", "check", PHONE_NATIONAL, "--sender", "acme")
    assert refused.returncode == 1
    [refusal] = json.loads(ctl(home, "--json", "status", PHONE_NATIONAL).stdout)
    assert json.loads(refused.stdout)["basis"] == refusal
    assert refusal["evidence"] == "said STOP"
    consent = ctl(home, "consent", PHONE_NATIONAL, "--sender", "acme", "--evidence", "form #12")
    assert consent.returncode == 0, consent.stderr
    delivered = json.loads(ctl(home, "--json", "check", PHONE_NATIONAL, "--sender", "acme").stdout)
    assert (delivered["basis"]["fact"], delivered["basis"]["evidence"]) == ("consent", "form #12")


def test_check_reports_quiet_hours_as_a_deferral(http_home: Path) -> None:
    """Inside the quiet hours of the recipient's zone (a +86 number: Asia/Shanghai), a
    consented commercial recipient is `defer quiet_hours` with exit 1 (not deliverable
    now) and --json gives when sending may resume; transactional is still deliver."""
    now = datetime.now(ZoneInfo("Asia/Shanghai"))
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    with (http_home / "filterd.toml").open("a") as config:
        config.write(f'[compliance]\nquiet_hours = "{start:%H:%M}-{end:%H:%M}"\n')
    assert ctl(http_home, "consent", PHONE_RAW, "--sender", "acme").returncode == 0
    held = ctl(http_home, "check", PHONE_RAW, "--sender", "acme")
    assert (held.returncode, held.stdout.strip()) == (1, "defer quiet_hours")
    document = json.loads(ctl(http_home, "--json", "check", PHONE_RAW, "--sender", "acme").stdout)
    assert (document["decision"], document["reason"]) == ("defer", "quiet_hours")
    assert document["resume"] == f"{end:%H:%M} Asia/Shanghai"
    transactional = ctl(
        http_home, "check", PHONE_RAW, "--sender", "acme", "--class", "transactional"
    )
    assert (transactional.returncode, transactional.stdout.strip()) == (0, "deliver")


def test_voice_refusal_does_not_touch_sms(home: Path) -> None:
    """With consents on sms and voice, `refuse --channel voice` stops calls only: check
    --channel voice drops (refused, channel voice in --json) while check of an SMS
    delivers; a voice consent over it needs --evidence; status and audit name voice."""
    for channel in ("sms", "voice"):
        result = ctl(home, "consent", PHONE_NATIONAL, "--sender", "acme", "--channel", channel)
        assert result.returncode == 0, result.stderr
    refused = ctl(home, "refuse", PHONE_RAW, "--sender", "acme", "--channel", "voice")
    assert refused.returncode == 0, refused.stderr
    assert refused.stdout.endswith("sender=acme channel=voice\n")
    call = ctl(home, "check", PHONE_NATIONAL, "--sender", "acme", "--channel", "voice")
    assert (call.returncode, call.stdout) == (1, "drop refused\n")
    document = json.loads(
        ctl(home, "--json", "check", PHONE_RAW, "--sender", "acme", "--channel", "voice").stdout
    )
    assert (document["channel"], document["basis"]["channel"]) == ("voice", "voice")
    sms = ctl(home, "check", PHONE_NATIONAL, "--sender", "acme")
    assert (sms.returncode, sms.stdout) == (0, "deliver\n")
    again = ctl(home, "consent", PHONE_NATIONAL, "--sender", "acme", "--channel", "voice")
    assert again.returncode == 2
    assert "refusal on record" in again.stderr
    status = json.loads(ctl(home, "--json", "status", PHONE_NATIONAL).stdout)
    assert [(f["fact"], f["channel"]) for f in status] == [
        ("refusal", "voice"), ("consent", "voice"), ("consent", "sms")
    ]  # fmt: skip
    audit = json.loads(ctl(home, "--json", "audit", "--to", PHONE_NATIONAL).stdout)
    assert [(e["event"], e["channel"]) for e in audit] == [
        ("refusal", "voice"), ("consent", "voice"), ("consent", "sms")
    ]  # fmt: skip


def test_sms_refusal_does_not_touch_voice(home: Path) -> None:
    """An sms refusal leaves a voice consent in force: calls deliver, SMS drop."""
    ctl(home, "consent", PHONE_NATIONAL, "--sender", "acme", "--channel", "voice")
    assert ctl(home, "refuse", PHONE_NATIONAL, "--sender", "acme").returncode == 0
    call = ctl(home, "check", PHONE_NATIONAL, "--sender", "acme", "--channel", "voice")
    assert (call.returncode, call.stdout) == (0, "deliver\n")
    sms = ctl(home, "check", PHONE_NATIONAL, "--sender", "acme", "--channel", "sms")
    assert (sms.returncode, sms.stdout) == (1, "drop refused\n")


def test_refuse_all_channels_covers_voice(home: Path) -> None:
    """`refuse --all-senders --channel all` drops calls too, over an older voice consent."""
    ctl(home, "consent", PHONE_NATIONAL, "--sender", "acme", "--channel", "voice")
    result = ctl(home, "refuse", PHONE_NATIONAL, "--all-senders", "--channel", "all")
    assert result.returncode == 0, result.stderr
    call = ctl(home, "--json", "check", PHONE_NATIONAL, "--sender", "acme", "--channel", "voice")
    document = json.loads(call.stdout)
    assert (call.returncode, document["reason"]) == (1, "refused")
    assert (document["basis"]["sender"], document["basis"]["channel"]) == ("*", "all")


@pytest.mark.parametrize("command", [["consent", "--sender", "acme"], ["refuse", "--all-senders"]])
def test_voice_needs_a_phone_number(home: Path, command: list[str]) -> None:
    """--channel voice with an email address: exit 2 naming the address, nothing written."""
    name, *options = command
    result = ctl(home, name, "jane@example.com", *options, "--channel", "voice")
    assert result.returncode == 2
    assert "'jane@example.com'" in result.stderr
    assert result.stdout == ""
    stats = json.loads(ctl(home, "stats", "--json").stdout)
    assert (stats["consumers"], stats["audit_entries"]) == (0, 0)


def test_export_names_the_voice_channel(home: Path) -> None:
    """A voice fact is exported with channel voice, in CSV and JSONL."""
    ctl(home, "refuse", PHONE_NATIONAL, "--sender", "acme", "--channel", "voice")
    rows = ctl(home, "export").stdout.strip().splitlines()
    assert len(rows) == 2
    assert rows[1].split(",")[1:4] == ["refusal", "acme", "voice"]
    [line] = ctl(home, "export", "--format", "jsonl").stdout.splitlines()
    assert json.loads(line)["channel"] == "voice"


def test_unsubscribe_url_for_calls(http_home: Path) -> None:
    """--channel voice gets a voice token for the number's E.164 consumer; --json names it."""
    result = ctl(http_home, "--json", "unsubscribe-url", PHONE_NATIONAL, "--sender", "acme",
                 "--channel", "voice")  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["channel"] == "voice"
    wanted = verify_url(http_home, document["url"])
    assert (wanted.sender, wanted.channel) == ("acme", Channel.VOICE)
    assert wanted.consumer == consumer_of(http_home, "+8613800138000")
