"""How long-running processes configure the garbage collector, seen in a fresh interpreter
(the rebuild's paused collector: tests/unit/test_prepared_documents.py)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_a_settled_process_freezes_its_start_up_heap_and_collects_young_objects_less_often(
) -> None:
    probe = (
        "import gc, json; from app.runtime import settle_heap; "
        "before = gc.get_threshold(); settle_heap(20000); "
        "print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count()]))"
    )
    before, after, frozen = json.loads(subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout)
    assert before[0] == 700 and after == [20000, *before[1:]]
    assert frozen > 1000
    off = ("import gc; from app.runtime import settle_heap; settle_heap(0); "
           "print(gc.get_freeze_count())")
    assert subprocess.run([sys.executable, "-c", off], capture_output=True, text=True,
                          check=True).stdout.strip() == "0"
