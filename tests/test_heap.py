"""The startup heap is frozen out of the collector's reach (filterd/heap.py)."""

from __future__ import annotations

import gc

from filterd.heap import THRESHOLDS, freeze_startup_heap


def test_freeze_moves_live_objects_out_of_collection_and_keeps_collecting_new_ones() -> None:
    """After the freeze the objects alive before it are in the permanent generation (a
    full collection no longer examines them), while a cycle made afterwards is still
    collected."""

    class Node:
        """A cycle's member."""

        def __init__(self) -> None:
            self.other: Node | None = None

    saved = gc.get_threshold()
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
        gc.set_threshold(*saved)
    assert gc.get_freeze_count() == 0


def test_freeze_spaces_out_full_collections() -> None:
    """From the freeze on, a full collection comes after THRESHOLDS[2] collections of
    the middle generation (more than Python's 10); the young generations keep
    Python's thresholds."""
    saved = gc.get_threshold()
    try:
        freeze_startup_heap()
        assert gc.get_threshold() == THRESHOLDS
        assert THRESHOLDS[:2] == (700, 10)
        assert THRESHOLDS[2] > 10
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
