"""How long-running processes and batch jobs tune the interpreter's garbage collector."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def settle_heap(gc_threshold: int) -> None:
    """For a long-running process once it has started: what exists now (modules, the schema,
    the wiring) lives as long as the process, so the collector stops scanning it, and young
    objects are collected in fewer, larger passes. Each request leaves some cyclic garbage (the
    GraphQL executor's), so collection stays on; at Python's default of 700 allocations, full
    passes over the start-up heap took ≈ 13 % of a query's time (bench/queries.py)."""
    if gc_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(gc_threshold, older, oldest)


@contextmanager
def collector_paused() -> Iterator[None]:
    """For a bounded batch job (`rebuild`): no cyclic garbage collection while it runs, one full
    collection after. A rebuild allocates documents by the million and frees them by reference
    counting; the collector's passes over them took ≈ 10 % of its time (bench/projection.py)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.collect()
