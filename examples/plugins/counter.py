#!/usr/bin/env python3
"""A Python source plugin: rows `id` (int64) and `name` (`row-{id}`), `totalRows` in all
(config, default 1000) in batches of `batchRows` (default 100), resumable from a position (the
number of rows already read). `delaySeconds` pauses between batches.

    arcane plugin check examples/plugins/counter.py --config '{"totalRows": 500}'
"""
import os
import sys
import time

import pyarrow as pa

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sdk", "python"))
from arcane_plugin import PermanentError, Plugin, serve  # noqa: E402

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("name", pa.string(), nullable=False)])


class Counter(Plugin):
    def schema(self, config):
        return SCHEMA

    def read(self, config, position):
        total, size = int(config.get("totalRows", 1000)), max(1, int(config.get("batchRows", 100)))
        if position is not None and not isinstance(position, int):
            raise PermanentError(f"position {position!r} is not a row count")
        for start in range(position or 0, total, size):
            ids = list(range(start, min(start + size, total)))
            yield pa.record_batch([pa.array(ids, pa.int64()), pa.array([f"row-{i}" for i in ids])], schema=SCHEMA), ids[-1] + 1
            time.sleep(float(config.get("delaySeconds", 0)))


if __name__ == "__main__":
    serve(Counter())
