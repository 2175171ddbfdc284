"""The serving process's heap and the cyclic garbage collector.

Python's collector sometimes examines every tracked object at once (a
generation-2 collection). In `filterd serve` the heap built at start — modules,
phonenumbers' metadata, settings, caches — dwarfs what serving a request
leaves behind, and a full collection over it stopped the event loop for 18 to
45 ms at a time (measured with `bench/api.py`, seen as the p99 of every front
end). `freeze_startup_heap` is called once every front end listens: it
collects once, then moves every object alive into the permanent generation,
which later collections skip. Those objects live as long as the process
anyway; what serving allocates is collected as before.

What is left for full collections is what serving holds: under a thousand open
connections per listener some 30,000 objects, whose full collection still took
15 to 40 ms of CPU. Python starts one after every `THRESHOLDS[2]` collections of
the middle generation (10 by default), when the objects moved to the oldest
generation since the last full collection are a quarter of those found alive
then; a storm of short connections (bench/hostile.py) met both every ~10 s. With
100 a full collection comes ten times more rarely; the young generations are
collected as before, and connections, freed at once when they end (they hold no
reference cycles), do not wait for it.
"""

from __future__ import annotations

import gc

THRESHOLDS = (700, 10, 100)
"""The collector's thresholds from the freeze on: Python's defaults, but a full
collection after 100 middle-generation ones rather than 10."""


def freeze_startup_heap() -> int:
    """Collect, then exempt every object alive now from later collections and space
    out the full ones (`THRESHOLDS`); how many objects were exempted."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return gc.get_freeze_count()
