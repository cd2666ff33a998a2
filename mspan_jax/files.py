"""Writing result files so that a reader never sees a partial one."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from typing import Any

from etils import epath


def write_bytes_atomic(path: str | os.PathLike | epath.Path, data: bytes) -> None:
    """Writes `data` to a temporary sibling, then renames it over `path` (parents created).

    Works for local and remote (gs://) paths through etils.epath."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def write_json_atomic(path: str | os.PathLike | epath.Path, payload: Mapping[str, Any]) -> None:
    """Writes `payload` as indented JSON atomically (`write_bytes_atomic`)."""
    write_bytes_atomic(path, (json.dumps(payload, indent=2) + "\n").encode("utf-8"))
