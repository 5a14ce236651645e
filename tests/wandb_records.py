"""Read back what W&B logged in offline mode: the records of a run's ``run-<id>.wandb`` file.

wandb 0.2x/0.3x write them with a Go core and ship no reader, so this reads the file format, which is LevelDB's
log format behind a 7-byte ``:W&B`` header: 32 KiB blocks of chunks, each ``crc32c (4) | length (2) | type (1)``
then the bytes; FULL chunks hold a whole record, FIRST/MIDDLE/LAST chunks one record in parts. Every record is a
``wandb_internal_pb2.Record`` protobuf.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
CHUNK_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a W&B run file (no :W&B header)")
    position, parts = 7, []
    while position + CHUNK_HEADER.size <= len(data):
        room = BLOCK - position % BLOCK
        if room < CHUNK_HEADER.size:  # the rest of a block too short for a chunk header is padding
            position += room
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, position)
        if kind == 0 and length == 0:  # padding
            position += room
            continue
        body = data[position + CHUNK_HEADER.size : position + CHUNK_HEADER.size + length]
        position += CHUNK_HEADER.size + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            parts = [body]
        elif kind == MIDDLE:
            parts.append(body)
        elif kind == LAST:
            yield b"".join([*parts, body])


def history(run_file: str | Path) -> list[dict[str, Any]]:
    """Every ``wandb.log`` row of the run, as ``{key: value}`` (values decoded from their JSON)."""
    rows = []
    for payload in _payloads(Path(run_file).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
    return rows
