"""The registry: its port and its adapters (see each module's docstring).

    port.py          the Registry Protocol, split by role (facts, audit, message
                     routes, admin); memory.py is its in-memory fake for unit tests
    redis.py         RedisRegistry: the Redis adapter, composed of the modules below
    router.py        where commands go: one server; cluster.py: a Redis Cluster
    connection.py    the redis-py client of a URL or a Sentinel-managed primary
                     (sentinel_url.py reads such a url)
    lookups.py       reads: lookups batched per loop turn on the raw RESP link (link.py)
    routes.py        message-route writes, batched per loop turn on the same link
    writes.py        durable pipelines and the layout check; durability.py: WAITAOF/WAIT
    scripts.py       the Lua merge and intern scripts; records.py: packed facts;
                     replies.py: reading values back
    names.py         sender and source names ↔ their ids
    audit.py         the audit stream; export.py: export and stats
    keys.py          every key name
    embedded.py      the private server child of the default configuration

redis, hiredis and the RESP link are imported under storage/ only
(tests/test_layering.py).
"""
