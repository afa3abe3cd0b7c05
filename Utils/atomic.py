"""Atomic json writes, without torch: a light parent process (a benchmark that measures its children's
memory) can import this and nothing heavy. `Utils.io` re-exports `write_json_atomic`."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json_atomic(path: str | Path, obj) -> Path:
    """Write json through a temporary file in the same folder, then rename: an existing file is
    replaced whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
