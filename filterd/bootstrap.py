"""Building the registry and service from Settings: shared by the two entry points
(the daemon and cli packages), which alone read config and call this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from filterd.compliance import QuietRule
from filterd.errors import ConfigError
from filterd.identity import ConsumerHasher
from filterd.secret import load_or_create
from filterd.service import Service
from filterd.settings import Settings
from filterd.signing import DkimSigner, SigningError
from filterd.storage.cluster import ClusterRegistry
from filterd.storage.embedded import EmbeddedServer
from filterd.storage.redis import RedisRegistry
from filterd.tokens import TokenKeys, derive_key, sender_table


@dataclass
class Runtime:
    """The objects one process uses, and what to release at the end."""

    service: Service
    registry: RedisRegistry
    embedded: EmbeddedServer | None
    tokens: TokenKeys | None = None
    """Unsubscribe token keys, when [http] is configured."""
    senders: dict[bytes, str] = field(default_factory=dict)
    """Token sender tag → configured sender name."""
    signer: DkimSigner | None = None
    """DKIM signer of relayed commercial mail, when [dkim] is configured."""

    async def close(self) -> None:
        """Close connections; leave the embedded server (if last user, it stops)."""
        try:
            await self.service.close()
            await self.registry.close()
        finally:
            if self.embedded is not None:
                self.embedded.release()


def build(settings: Settings) -> Runtime:
    """Secret, registry (starting the embedded server if needed) and service.

    Blocking (it may start a server): call it before the event loop's work
    starts, or through asyncio.to_thread.
    """
    reg = settings.registry
    secret = load_or_create(reg.secret_file)
    embedded = None
    url = reg.url
    if url == "embedded":
        embedded = EmbeddedServer(reg.data_dir, reg.server)
        url = embedded.acquire()
    kind = ClusterRegistry if reg.cluster else RedisRegistry
    registry = kind.from_url(
        url,
        bucket_bits=reg.bucket_bits,
        audit_max_entries=reg.audit_max_entries,
        audit_retention_ms=reg.audit_retention_s * 1000,
        min_replicas=reg.min_replicas,
    )
    service = Service(
        registry,
        ConsumerHasher(secret),
        request_ttl_s=reg.request_ttl_s,
        fail_mode=reg.fail_mode,
        quiet=QuietRule.of(settings.compliance),
    )
    return Runtime(
        service,
        registry,
        embedded,
        token_keys(settings, secret),
        senders(settings),
        dkim_signer(settings),
    )


def dkim_signer(settings: Settings) -> DkimSigner | None:
    """The [dkim] signer, its key checked by signing a test message (ConfigError if bad)."""
    dkim = settings.dkim
    if dkim is None:
        return None
    try:
        return DkimSigner(dkim.selector, dkim.domain, dkim.key_file.read_bytes())
    except OSError as exc:
        raise ConfigError("dkim.key_file", f"{dkim.key_file}: {exc.strerror}") from None
    except SigningError as exc:
        raise ConfigError("dkim.key_file", f"{dkim.key_file}: {exc}") from None


def token_keys(settings: Settings, secret: bytes) -> TokenKeys | None:
    """The unsubscribe token keys [http] asks for (None without [http])."""
    http = settings.http
    if http is None:
        return None
    current = derive_key(secret)
    if http.token_secret_file is not None:
        current = load_or_create(http.token_secret_file, "http.token_secret_file")
    retired = [
        load_or_create(path, "http.retired_token_secret_files", create=False)
        for path in http.retired_token_secret_files
    ]
    if http.retired_derived_key and http.token_secret_file is not None:
        retired.append(derive_key(secret))
    return TokenKeys(current, retired, max_age_s=http.token_max_age_s)


def senders(settings: Settings) -> dict[bytes, str]:
    """Sender tag → name for every configured sender."""
    try:
        return sender_table(settings.senders())
    except ValueError as exc:
        raise ConfigError("smtp.accounts", str(exc)) from None
