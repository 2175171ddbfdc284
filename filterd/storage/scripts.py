"""The Lua scripts of the registry and the bytes they read and answer.

`MERGE` writes facts into their buckets (one call per up to `SCRIPT_ITEMS`
items); `INTERN` gives a sender or source name its id. Scripts are called by
EVALSHA and loaded on a NOSCRIPT reply (writes.py, cluster.py). Everything here
is pure: commands are built as tuples, replies read from values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from filterd.errors import RegistryUnavailable
from filterd.model import BulkRow, Channel, Fact, Kind, WriteResult
from filterd.storage.records import MAX_SIDE_BYTES, Record, pack, pack_side
from filterd.storage.replies import as_bytes

# Merge facts into buckets atomically. ARGV[1]: bucket_bits; ARGV[2]: the
# items, concatenated, each:
#   consumer id (10) | check (1) | record length (1) | record | side length (2) | side
# check 1 = a consent or request without evidence: refused when a refusal that
# covers it is on record. Without KEYS the bucket keys are derived here from the
# ids (the layout of keys.py), so a batch of thousands costs one short command;
# on a Cluster every item of a call is of one bucket, whose facts and side keys
# are declared as KEYS[1] and KEYS[2].
# Returns one byte per item: "1" stored, "0" a newer fact of the slot is kept,
# "2" refused (refusal on record).
MERGE = """
local bits, blob = tonumber(ARGV[1]), ARGV[2]
local fmt = '%0' .. math.floor((bits + 3) / 4) .. 'x}'
local scale = 2 ^ (32 - bits)
local out, pos, n = {}, 1, #blob
local fixed = #KEYS == 2
while pos <= n do
  local fkey, xkey = KEYS[1], KEYS[2]
  if not fixed then
    local b1, b2, b3, b4 = string.byte(blob, pos, pos + 3)
    local tag = string.format(fmt, math.floor((((b1 * 256 + b2) * 256 + b3) * 256 + b4) / scale))
    fkey, xkey = 'fd:r:{' .. tag, 'fd:x:{' .. tag
  end
  local field = string.sub(blob, pos + 2, pos + 9)
  local check = string.byte(blob, pos + 10)
  local rlen = string.byte(blob, pos + 11)
  local rec = string.sub(blob, pos + 12, pos + 11 + rlen)
  pos = pos + 12 + rlen
  local s1, s2 = string.byte(blob, pos, pos + 1)
  local xval = string.sub(blob, pos + 2, pos + 1 + s1 * 256 + s2)
  pos = pos + 2 + s1 * 256 + s2
  local slot = string.sub(rec, 1, 4)
  local cur = redis.call('HGET', fkey, field)
  local code = '1'
  if not cur then
    redis.call('HSET', fkey, field, rec)
    if xval ~= '' then redis.call('HSET', xkey, field .. slot, xval) end
  else
    local ts = string.sub(rec, 5, 10)
    local nchan, nscope = string.byte(rec, 1) % 16, string.sub(rec, 2, 4)
    local keep, at, refused, newer, replaced = {}, 1, false, false, false
    while at <= #cur do
      local head = string.byte(cur, at)
      local kind = math.floor(head / 16)
      local size = 12
      if kind == 2 then size = 18 end
      local r = string.sub(cur, at, at + size - 1)
      if check == 1 and kind == 3 then
        local chan, scope = head % 16, string.sub(r, 2, 4)
        if (scope == nscope or scope == '\0\0\0') and (chan == 0 or chan == nchan) then
          refused = true
        end
      end
      if string.sub(r, 1, 4) == slot then
        replaced = true
        if string.sub(r, 5, 10) > ts then newer = true end
      else
        keep[#keep + 1] = r
      end
      at = at + size
    end
    if refused then code = '2' elseif newer then code = '0' end
    if code == '1' then
      keep[#keep + 1] = rec
      redis.call('HSET', fkey, field, table.concat(keep))
      if xval ~= '' then
        redis.call('HSET', xkey, field .. slot, xval)
      elseif replaced then
        redis.call('HDEL', xkey, field .. slot)
      end
    end
  end
  out[#out + 1] = code
end
return table.concat(out)
"""

# Intern a name: KEYS name→id hash, id→name hash; ARGV name. Returns the id.
INTERN = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id then return tonumber(id) end
id = redis.call('HLEN', KEYS[2]) + 1
redis.call('HSET', KEYS[1], ARGV[1], id)
redis.call('HSET', KEYS[2], id, ARGV[1])
return id
"""

SCRIPTS = {
    name: (source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())
    for name, source in (("merge", MERGE), ("intern", INTERN))
}
"""name → (source, SHA1) of every script."""

CODES = {
    ord("1"): WriteResult.STORED,
    ord("0"): WriteResult.SUPERSEDED,
    ord("2"): WriteResult.REFUSAL_ON_RECORD,
}
SCRIPT_ITEMS = 1000
"""Items per merge call: ~3 ms of server time, so live lookups are not held up."""

Groups = Sequence[tuple[Sequence[str], Sequence[bytes]]]
"""Encoded merge items in groups, each with its declared keys (none: the script
derives them from the consumer ids)."""


def intern_call(names: tuple[str, str], name: str) -> tuple[Any, ...]:
    """The EVALSHA interning `name` in the name→id and id→name hashes `names`."""
    return ("EVALSHA", SCRIPTS["intern"][1], len(names), *names, name)


def merge_calls(groups: Groups, bucket_bits: int) -> list[tuple[Any, ...]]:
    """The EVALSHA commands of a merge: each group cut into calls of at most
    SCRIPT_ITEMS items."""
    sha = SCRIPTS["merge"][1]
    return [
        ("EVALSHA", sha, len(declared), *declared, bucket_bits,
         b"".join(items[start : start + SCRIPT_ITEMS]))
        for declared, items in groups
        for start in range(0, len(items), SCRIPT_ITEMS)
    ]  # fmt: skip


def merge_codes(groups: Groups, replies: Sequence[Any]) -> bytes:
    """The result codes of merge_calls(groups) from their replies (then any WAIT
    replies), checked: one code per item."""
    sizes = [
        min(SCRIPT_ITEMS, len(items) - start)
        for _, items in groups
        for start in range(0, len(items), SCRIPT_ITEMS)
    ]
    if len(replies) < len(sizes):
        raise RegistryUnavailable("registry write answered for the wrong number of calls")
    codes = []
    for size, reply in zip(sizes, replies, strict=False):
        answer = as_bytes(reply) if isinstance(reply, bytes | str) else None
        if answer is None or len(answer) != size:
            raise RegistryUnavailable("registry write answered for the wrong number of facts")
        codes.append(answer)
    return b"".join(codes)


def results(codes: bytes) -> list[WriteResult]:
    """The merge script's result codes as WriteResults."""
    return [CODES[code] for code in codes]


def fact_item(consumer: bytes, fact: Fact, scope_id: int, source_id: int) -> bytes:
    """One merge item for `fact`, its sender and source interned as the ids given."""
    record = pack(
        Record(
            kind=fact.kind,
            channel=fact.channel,
            scope_id=scope_id,
            at_ms=fact.at_ms,
            source_id=source_id,
            expires_ms=fact.expires_ms,
        )
    )
    side = pack_side(fact.evidence, fact.message_id)
    return encode_item(consumer, fact.kind, bool(fact.evidence), record, side)


class BulkEncoder:
    """Encodes bulk rows for the merge script, with per-batch caches of the
    slot bytes (kind, channel, scope) and source-id bytes."""

    def __init__(self) -> None:
        self.slots: dict[tuple[Kind, str, Channel | None], bytes] = {}
        self.sources: dict[str, bytes] = {}

    def slot(self, kind: Kind, sender: str, channel: Channel | None, scope_id: int) -> bytes:
        """Remember and return the 4 slot bytes."""
        record = Record(kind, channel, scope_id, 0, 1, 0 if kind is Kind.REQUEST else None)
        slot = self.slots[(kind, sender, channel)] = record.slot
        return slot

    def source(self, name: str, source_id: int) -> bytes:
        """Remember and return the 2 source-id bytes."""
        encoded = self.sources[name] = source_id.to_bytes(2, "big")
        return encoded

    @staticmethod
    def item(row: BulkRow, slot: bytes, source: bytes) -> bytes:
        """One merge-script item for `row` (same bytes as records.pack)."""
        record = slot + row.at_ms.to_bytes(6, "big") + source
        if row.kind is Kind.REQUEST:
            record += (row.expires_ms or 0).to_bytes(6, "big")
        side = pack_side(row.evidence, None)
        return encode_item(row.consumer, row.kind, bool(row.evidence), record, side)


def encode_item(
    consumer: bytes, kind: Kind, has_evidence: bool, record: bytes, side: bytes
) -> bytes:
    """consumer id | check | record length | record | side length | side (see MERGE)."""
    if len(side) > MAX_SIDE_BYTES:
        raise ValueError(f"evidence and message id exceed {MAX_SIDE_BYTES} bytes")
    check = b"\x01" if kind is not Kind.REFUSAL and not has_evidence else b"\x00"
    return b"".join(
        (consumer, check, bytes((len(record),)), record, len(side).to_bytes(2, "big"), side)
    )
