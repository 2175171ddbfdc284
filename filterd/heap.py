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
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect, then exempt every object alive now from later collections; how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
