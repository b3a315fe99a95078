"""Atomic, deterministic file writing: nothing is ever left half-written, equal content gives equal bytes."""
from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from natinv.errors import NatinvError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (readable by np.load) with fixed timestamps, so equal arrays give identical bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write_bytes(path, npz_bytes(arrays))


def read_npz(path: Path, keys: Sequence[str] | None = None, prefix: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, or only `keys`, or only the members whose names start with `prefix` (the other
    members are not read)."""
    path = Path(path)
    if not path.is_file():
        raise NatinvError(f"{path}: not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = z.files if keys is None else keys
            return {k: z[k] for k in names if prefix is None or k.startswith(prefix)}
    except Exception as exc:
        raise NatinvError(f"{path}: unreadable .npz ({type(exc).__name__}: {exc})") from None


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise NatinvError(f"{path}: not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise NatinvError(f"{path}: not valid JSON ({exc})") from None
