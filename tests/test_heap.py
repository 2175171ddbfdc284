"""The startup heap is frozen out of the collector's reach (filterd/heap.py)."""

from __future__ import annotations

import gc

from filterd.heap import freeze_startup_heap


def test_freeze_moves_live_objects_out_of_collection_and_keeps_collecting_new_ones() -> None:
    """After the freeze the objects alive before it are in the permanent generation (a
    full collection no longer examines them), while a cycle made afterwards is still
    collected."""

    class Node:
        """A cycle's member."""

        def __init__(self) -> None:
            self.other: Node | None = None

    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 1000
        first, second = Node(), Node()
        first.other, second.other = second, first
        del first, second
        assert gc.collect() >= 2
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
