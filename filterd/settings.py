"""The settings filterd runs with: frozen types, one per config table (`[registry]`,
`[smtp]`, `[smpp]`, `[cmpp]`, `[http]`, ...), and their defaults. `filterd.config` reads the
TOML file into them; every other module imports the settings it needs from here,
not the loader."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from filterd.model import MessageClass
from filterd.policy import FailMode
from filterd.quiet_hours import QuietHours

Endpoint = tuple[str, int]


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """[registry]"""

    url: str = "embedded"
    cluster: bool = False
    data_dir: Path = Path("var")
    secret_file: Path = Path("var/secret")
    request_ttl_s: int = 30 * 86400
    fail_mode: FailMode = FailMode.CLOSED
    default_region: str | None = None
    server: str | None = None
    bucket_bits: int = 16
    audit_max_entries: int = 1_000_000
    audit_retention_s: int = 400 * 86400
    min_replicas: int = 0
    """Replicas that must confirm each write (default 1 with a redis+sentinel:// url)."""


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """What one listener allows a peer (SPEC §11): the same keys in every listener's table."""

    idle_timeout_s: float
    """A connection that sends nothing for this long is closed (HTTP: without a
    complete request head)."""
    max_connections: int = 1000
    """Connections open at once on this listener; more are refused."""
    max_connections_per_address: int = 100
    """Connections open at once from one client address on this listener."""


SMTP_IDLE_S, POLICY_IDLE_S, SMPP_IDLE_S, HTTP_IDLE_S = 300.0, 300.0, 120.0, 10.0
"""Default `idle_timeout` of each listener table (RFC 5321's 5 minutes for SMTP;
Postfix's own policy client idles 300 s; SMPP: enquire_link counts as traffic)."""
CMPP_IDLE_S = 120.0
"""Default `cmpp.idle_timeout` (CMPP_ACTIVE_TEST counts as traffic)."""
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
"""Default `http.status_networks`."""


@dataclass(frozen=True, slots=True)
class SmtpAccount:
    """[[smtp.accounts]]"""

    username: str
    sender: str
    stream: MessageClass
    password: str | None = None
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """[smtp]. Without `listen` the relay is off and only the accounts are used
    (by the Postfix policy service)."""

    listen: Endpoint | None
    upstream: Endpoint | None
    upstream_tls: str = "none"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_message_size: int = 25 * 1000**2
    max_recipients: int = 1000
    accounts: tuple[SmtpAccount, ...] = ()
    hostname: str | None = None
    """Name in the greeting and EHLO; None: the machine's host name."""
    workers: int = 1
    """Processes serving `listen` together (SO_REUSEPORT)."""
    unsubscribe_domain: str | None = None
    """Mail to unsubscribe+TOKEN@this domain is an opt-out."""
    unsubscribe_listen: Endpoint | None = None
    """A listener that takes such mail from anyone (no AUTH) and nothing else."""
    feedback_address: str | None = None
    """Feedback-loop reports (RFC 5965) mailed here on `unsubscribe_listen` are
    complaints (lower case)."""
    limits: ListenerLimits = ListenerLimits(SMTP_IDLE_S)
    """Idle timeout and connection caps of `listen` and `unsubscribe_listen` (each
    listener counts its own connections)."""


@dataclass(frozen=True, slots=True)
class SmppUpstream:
    """[smpp.upstream]"""

    host: str
    port: int
    system_id: str
    password: str
    window: int = 50
    """Submits outstanding at the carrier at once."""
    rate: float = 0.0
    """Submits per second at most; 0 = no limit."""
    enquire_link_s: int = 30


DEFAULT_CONFIRMATIONS: dict[str, dict[str, str]] = {
    "opt_out": {
        "zh": "您已退订，将不再收到此号码的营销短信。",
        "en": "You are unsubscribed and will receive no more marketing messages from this number.",
    },
    "opt_in": {
        "zh": "您已订阅。回复TD退订。",
        "en": "You are subscribed. Reply STOP to unsubscribe.",
    },
    "help": {
        "zh": "回复TD退订，回复START重新订阅。",
        "en": "Reply STOP to unsubscribe, START to subscribe again.",
    },
}


@dataclass(frozen=True, slots=True)
class Confirmations:
    """[smpp.confirmations]: replies to a consumer's keyword, by intent and language."""

    enabled: bool = True
    texts: dict[str, dict[str, str]] = field(default_factory=lambda: DEFAULT_CONFIRMATIONS)

    def text(self, intent: str, language: str) -> str:
        """The reply for an intent (opt_out, opt_in, help) in a language (zh, en, ...)."""
        choices = self.texts[intent]
        return choices.get(language) or choices.get("en") or next(iter(choices.values()))


@dataclass(frozen=True, slots=True)
class SmppAccount:
    """[[smpp.accounts]]"""

    system_id: str
    password: str
    sender: str
    stream: MessageClass


@dataclass(frozen=True, slots=True)
class SmppNumber:
    """[[smpp.numbers]]"""

    address: str
    sender: str


@dataclass(frozen=True, slots=True)
class SmppSettings:
    """[smpp]"""

    listen: Endpoint
    upstream: SmppUpstream | None = None
    accounts: tuple[SmppAccount, ...] = ()
    numbers: tuple[SmppNumber, ...] = ()
    window: int = 100
    """Submits a client may have outstanding at once (more: ESME_RTHROTTLED)."""
    receipt_ttl_s: int = 3 * 86400
    """How long a message id is kept to route its delivery receipt back."""
    confirmations: Confirmations = field(default_factory=Confirmations)
    workers: int = 1
    """Processes serving `listen` together (SO_REUSEPORT), each with its own carrier bind."""
    limits: ListenerLimits = ListenerLimits(SMPP_IDLE_S)


CMPP_V20, CMPP_V30 = 0x20, 0x30
"""The CMPP versions served: 2.0 and 3.0, as the Version byte of CMPP_CONNECT carries them."""


@dataclass(frozen=True, slots=True)
class CmppUpstream:
    """[cmpp.upstream]: the carrier's ISMG, where filterd logs in as an SP."""

    host: str
    port: int
    sp_id: str
    """Source_Addr at CMPP_CONNECT (6 digits)."""
    shared_secret: str = field(repr=False)
    version: int = CMPP_V30
    """CMPP_V20 or CMPP_V30."""
    window: int = 16
    """Submits outstanding at the ISMG at once."""
    rate: float = 0.0
    """Submits per second at most; 0 = no limit."""
    active_test_s: int = 30
    """Seconds without traffic before filterd sends CMPP_ACTIVE_TEST."""


@dataclass(frozen=True, slots=True)
class CmppAccount:
    """[[cmpp.accounts]]: an SP platform that submits through filterd."""

    sp_id: str
    """Its Source_Addr at CMPP_CONNECT (6 digits)."""
    shared_secret: str = field(repr=False)
    sender: str
    stream: MessageClass


@dataclass(frozen=True, slots=True)
class CmppNumber:
    """[[cmpp.numbers]]: a service number whose MO (and its extensions') is `sender`'s."""

    address: str
    sender: str


@dataclass(frozen=True, slots=True)
class CmppSettings:
    """[cmpp]: the CMPP relay (SP platforms in, the carrier's ISMG out)."""

    listen: Endpoint
    upstream: CmppUpstream | None = None
    accounts: tuple[CmppAccount, ...] = ()
    numbers: tuple[CmppNumber, ...] = ()
    window: int = 16
    """Submits a client may have outstanding at once (more: Result 8, flow control)."""
    receipt_ttl_s: int = 3 * 86400
    """How long a Msg_Id is kept to route its status report back."""
    confirmations: Confirmations = field(default_factory=Confirmations)
    """Replies to a consumer's keyword ([cmpp.confirmations], as [smpp.confirmations])."""
    workers: int = 1
    """Processes serving `listen` together (SO_REUSEPORT), each with its own ISMG link."""
    limits: ListenerLimits = ListenerLimits(CMPP_IDLE_S)


@dataclass(frozen=True, slots=True)
class KeywordSettings:
    """[keywords]"""

    opt_out: tuple[str, ...] = (
        "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
        "T", "TD", "N", "R", "退订", "退訂",
    )  # fmt: skip
    opt_in: tuple[str, ...] = ("START", "YES", "UNSTOP")
    help: tuple[str, ...] = ("HELP", "INFO")


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """[http]"""

    listen: Endpoint
    public_url: str
    token_secret_file: Path | None = None
    """Signing key for unsubscribe tokens; None: derived from the registry secret."""
    retired_token_secret_files: tuple[Path, ...] = ()
    """Keys of earlier rotations, still accepted when verifying."""
    retired_derived_key: bool = False
    """`"derived"` listed among the retired keys: the key derived from the
    registry secret (the default before a first rotation) is still accepted."""
    token_max_age_s: int = 400 * 86400
    """Tokens older than this are refused, whichever key signed them."""
    limits: ListenerLimits = ListenerLimits(HTTP_IDLE_S)
    """`idle_timeout` here: time allowed for a complete request head."""
    body_timeout_s: float = 30.0
    """Time allowed, once the head is in, for the body and the answer."""
    status_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = LOOPBACK
    """Client networks served `/metrics` and `/healthz`."""


API_SCOPES = ("check", "read", "write")
"""What an API key may be allowed: ask for decisions, read facts and the audit log,
write facts."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """[[api.keys]]: one bearer key of the decision and consent API."""

    name: str
    key: str = field(repr=False)
    """The bearer key itself (read from key_file; never shown or logged)."""
    senders: tuple[str, ...]
    """The senders it may act for; `("*",)`: every sender."""
    scopes: frozenset[str]
    """A subset of API_SCOPES."""

    def may_act_for(self, sender: str) -> bool:
        """Whether this key may act for `sender` (`"*"`, a global refusal, needs `"*"`)."""
        return "*" in self.senders or (sender != "*" and sender in self.senders)


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """[api]: the decision and consent API (SPEC §8)."""

    listen: Endpoint
    keys: tuple[ApiKey, ...]
    limits: ListenerLimits = ListenerLimits(HTTP_IDLE_S)
    """`idle_timeout` here: time allowed for a complete request head."""
    body_timeout_s: float = 30.0
    """Time allowed, once the head is in, for the body and the answer."""


@dataclass(frozen=True, slots=True)
class DkimSettings:
    """[dkim]: sign relayed commercial mail (and add the one-click headers)."""

    selector: str
    domain: str
    key_file: Path


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """[policy]"""

    listen: Endpoint
    limits: ListenerLimits = ListenerLimits(POLICY_IDLE_S)


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """[daemon]: process-wide behaviour of `filterd serve`."""

    drain_timeout_s: float = 30.0
    """On SIGTERM, how long transactions in flight may take before connections are cut."""


class CancelMethod(enum.Enum):
    """[compliance] cancel_method: what a commercial message without a way to cancel gets."""

    ADD = "add"
    """Email: the List-Unsubscribe headers are added; SMS: the cancel text is appended."""
    REQUIRE = "require"
    """Refused (550 / SMPP 0x402 / CMPP 66)."""
    OFF = "off"
    """Relayed as it is."""


@dataclass(frozen=True, slots=True)
class SenderCompliance:
    """[[compliance.senders]]: what one sender's commercial SMS must carry."""

    sender: str
    signature: str | None = None
    """Its 【signature】: at the start or the end of the text, else refused (0x403)."""
    sms_cancel_text: str | None = None
    """The reply-to-cancel instruction (回T退订): looked for, appended under `add`."""


DEFAULT_TIME_ZONE = "Asia/Shanghai"


@dataclass(frozen=True, slots=True)
class ComplianceSettings:
    """[compliance]: a way to cancel, the sender's signature, quiet hours. Absent
    (Settings.compliance None), none of it applies."""

    cancel_method: CancelMethod = CancelMethod.ADD
    quiet_hours: QuietHours | None = None
    """The recipient's local hours when commercial messages are deferred; None: never."""
    time_zone: str = DEFAULT_TIME_ZONE
    """The zone of recipients whose address does not tell theirs (every email address)."""
    senders: tuple[SenderCompliance, ...] = ()

    def rules(self, sender: str) -> SenderCompliance | None:
        """The signature and cancel text of `sender`, if it has a table."""
        for rules in self.senders:
            if rules.sender == sender:
                return rules
        return None


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration. An absent section is None: that front end is off."""

    path: Path
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    keywords: KeywordSettings = field(default_factory=KeywordSettings)
    smtp: SmtpSettings | None = None
    smpp: SmppSettings | None = None
    http: HttpSettings | None = None
    policy: PolicySettings | None = None
    dkim: DkimSettings | None = None
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    compliance: ComplianceSettings | None = None
    api: ApiSettings | None = None
    cmpp: CmppSettings | None = None

    def senders(self) -> list[str]:
        """Every sender an account or a number names (the ones tokens may carry)."""
        names: dict[str, None] = {}
        if self.smtp is not None:
            names.update(dict.fromkeys(a.sender for a in self.smtp.accounts))
        if self.smpp is not None:
            names.update(dict.fromkeys(a.sender for a in self.smpp.accounts))
            names.update(dict.fromkeys(n.sender for n in self.smpp.numbers))
        if self.cmpp is not None:
            names.update(dict.fromkeys(a.sender for a in self.cmpp.accounts))
            names.update(dict.fromkeys(n.sender for n in self.cmpp.numbers))
        return list(names)
