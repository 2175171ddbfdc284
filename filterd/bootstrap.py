"""Building the registry and service from Settings: shared by the two entry points
(daemon.py and cli.py), which alone read config and call this.
"""

from __future__ import annotations

from dataclasses import dataclass

from filterd.config import Settings
from filterd.embedded import EmbeddedServer
from filterd.identity import ConsumerHasher
from filterd.redis_registry import RedisRegistry
from filterd.secret import load_or_create
from filterd.service import Service


@dataclass
class Runtime:
    """The objects one process uses, and what to release at the end."""

    service: Service
    registry: RedisRegistry
    embedded: EmbeddedServer | None

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
    registry = RedisRegistry.from_url(
        url,
        bucket_bits=reg.bucket_bits,
        audit_max_entries=reg.audit_max_entries,
        audit_retention_ms=reg.audit_retention_s * 1000,
    )
    service = Service(
        registry,
        ConsumerHasher(secret),
        request_ttl_s=reg.request_ttl_s,
        fail_mode=reg.fail_mode,
    )
    return Runtime(service, registry, embedded)
