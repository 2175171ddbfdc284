"""The audit log on Redis: one stream (keys.AUDIT), bounded by length
(`audit_max_entries`, trimmed approximately with every append) and by age
(`audit_retention_ms`); appended durably, read backwards page by page."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from filterd.model import AuditEntry
from filterd.storage import keys
from filterd.storage.port import AuditQuery
from filterd.storage.replies import as_text

if TYPE_CHECKING:
    from filterd.storage.router import Router
    from filterd.storage.writes import Writer

_FIELDS = (
    "event",
    "sender",
    "consumer",
    "channel",
    "reason",
    "source",
    "origin",
    "message_id",
    "detail",
)
"""The fields of an entry in the stream (its time is the stream id)."""


class AuditStream:
    """Append to and read the audit stream."""

    def __init__(self, router: Router, writer: Writer, max_entries: int, retention_ms: int) -> None:
        self._router = router
        self._writer = writer
        self._max = max_entries
        self._retention_ms = retention_ms

    def queue(self, pipe: Any, entry: AuditEntry) -> None:
        """Queue the XADD of `entry` (capped at max_entries) on a pipeline."""
        fields = {name: getattr(entry, name) for name in _FIELDS}
        pipe.xadd(keys.AUDIT, {k: v for k, v in fields.items() if v is not None},
                  maxlen=self._max, approximate=True)  # fmt: skip

    def trim(self, pipe: Any) -> None:
        """Queue the trim of entries older than the retention (once per pipeline)."""
        oldest = int(time.time() * 1000) - self._retention_ms
        pipe.xtrim(keys.AUDIT, minid=str(oldest), approximate=True)

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        """See Registry.append_audit: one durable pipeline."""
        if not entries:
            return

        def build(pipe: Any) -> None:
            for entry in entries:
                self.queue(pipe, entry)
            self.trim(pipe)

        try:
            await self._writer.run(build, durable=True, key=keys.AUDIT)
        except (RedisError, OSError) as exc:
            raise self._router.unavailable("audit write failed", exc) from exc

    async def read(self, query: AuditQuery) -> list[AuditEntry]:
        """See Registry.read_audit: pages backwards through the stream."""
        out: list[AuditEntry] = []
        upper: str = "+"
        try:
            while len(out) < query.limit:
                page = await (await self._router.client(keys.AUDIT)).xrevrange(
                    keys.AUDIT, max=upper, min=str(max(query.since_ms, 0)), count=1000
                )
                if not page:
                    break
                for raw_id, raw in page:
                    entry = _entry(as_text(raw_id), raw or {})
                    if query.consumer in (None, entry.consumer) and query.sender in (
                        None,
                        entry.sender,
                    ):
                        out.append(entry)
                upper = "(" + as_text(page[-1][0])
        except (RedisError, OSError) as exc:
            raise self._router.unavailable("audit read failed", exc) from exc
        return out[: query.limit]

    async def length(self) -> int:
        """How many entries the stream holds (RedisError or OSError on failure)."""
        return int(await (await self._router.client(keys.AUDIT)).xlen(keys.AUDIT))


def _entry(raw_id: str, raw: dict[Any, Any]) -> AuditEntry:
    values = {as_text(k): as_text(v) for k, v in raw.items()}
    at_ms = int(raw_id.split("-", maxsplit=1)[0])
    return AuditEntry(
        at_ms=at_ms,
        event=values.get("event", "?"),
        **{name: values.get(name) for name in _FIELDS if name != "event"},
    )
