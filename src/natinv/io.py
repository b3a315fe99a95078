"""Atomic, deterministic file writing: nothing is ever left half-written, equal content gives equal bytes, every
write stays inside the experiment folder (confine); every JSON and .npz is sealed as it is written and checked as it
is read (natinv.integrity)."""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tempfile
import struct
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from natinv.errors import NatinvError
from natinv.integrity import SEAL, damaged, json_seal, place, require_file, unsealed, verify_npz


def _umask() -> int:
    """The process's umask, read without changing it (Linux); elsewhere set and restored at once."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_ROOTS: list[Path] = []  # confine(): the folders every write must stay inside (empty: no confinement)
TEMP = re.compile(r"^\.(?P<name>.+)\.natinv-[a-z0-9_]{8}\.tmp$")  # the temporary names atomic_path makes, and only those


def confine(*roots: Path) -> None:
    """From now on every write of this process (atomic_path) must land inside one of `roots` (results/{experiment},
    which may itself be a symbolic link, e.g. to a scratch file system): a path outside, or one that passes through
    a symbolic link below the root, is refused with one line (natinv follows no link inside the results it writes)."""
    _ROOTS[:] = [Path(r).absolute() for r in roots]


def check_confined(path: Path) -> None:
    """One line unless `path` lies inside a confine() root with no symbolic link between the root and its folder."""
    if not _ROOTS:
        return
    path = Path(path).absolute()
    root = next((r for r in _ROOTS if r == path or r in path.parents), None)
    if root is None:
        raise NatinvError(f"{path}: outside {', '.join(map(str, _ROOTS))}; natinv writes only inside its results folder")
    folder = root
    for part in path.relative_to(root).parts[:-1]:
        folder = folder / part
        if folder.is_symlink():
            raise NatinvError(f"{folder}: a symbolic link inside {root} (to {os.path.realpath(folder)}); natinv writes "
                              f"only into real folders there: replace the link by a folder (a link to the whole "
                              f"results folder or experiment folder is followed)")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` for the block to write; when the block ends the file is flushed to disk and
    renamed over `path` with the permissions the umask gives a new file (mkstemp's own are 0600, which a group on a
    shared file system could not read). When the block fails the temporary file is removed and `path` is untouched.
    `path` must be inside the confined roots (confine)."""
    path = Path(path)
    check_confined(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.natinv-", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise NatinvError(f"{path}: cannot be written ({exc.strerror or exc})") from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise NatinvError(f"{path}: cannot be written ({exc.strerror or exc})") from None
        raise


_STAGED: list[list[tuple[Path, bytes]]] = []  # staged(): the writes held back until the block ends


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path` (atomic_path); inside staged(), when
    the block ends without an error."""
    if _STAGED:
        check_confined(path)
        _STAGED[-1].append((Path(path), bytes(data)))
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def current_bytes(path: Path) -> bytes | None:
    """What `path` holds, or will hold once the staged() block around this call ends; None when it is no file."""
    for staged_path, data in reversed([w for block in _STAGED for w in block]):
        if staged_path == Path(path):
            return data
    return Path(path).read_bytes() if Path(path).is_file() else None


@contextmanager
def staged() -> Iterator[None]:
    """Hold back every atomic_write_bytes (and so atomic_write_json, figures) of the block and write them all when it
    ends without an error: a stage that fails on any input it reads (a damaged file, a missing key) has written
    nothing, and the outputs of its last good run stay as they were."""
    _STAGED.append([])
    try:
        yield
        writes = _STAGED[-1]
    finally:
        _STAGED.pop()
    for path, data in writes:
        atomic_write_bytes(path, data)


def check_writable(path: Path) -> None:
    """One line, before any work, when `path` could not be written: its nearest existing ancestor must be a folder
    this process may write in (a results path that is a file, read-only or not creatable fails here, not at the end)."""
    check_confined(path)
    path = Path(path).absolute()
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NatinvError(f"{path}: cannot be written, {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise NatinvError(f"{path}: cannot be written, {folder} is not writable")


def remove_stale_temps(path: Path) -> list[Path]:
    """The temporary files atomic writes of `path` left when their process was killed (a file: `.{name}.natinv-*.tmp`
    beside it; a folder: every such name inside, below no symbolic link); only names atomic_path makes (TEMP), never
    a file that merely ends in .tmp. Only the job that owns `path` may call it."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        found = [Path(root) / f for root, _, files in os.walk(path) for f in files if TEMP.match(f)]  # os.walk: no links
    elif path.parent.is_dir():
        found = [p for p in path.parent.iterdir() if (m := TEMP.match(p.name)) and m["name"] == path.name]
    else:
        found = []
    for tmp in sorted(found):
        tmp.unlink(missing_ok=True)
    return sorted(found)


def atomic_write_json(path: Path, obj: Any) -> None:
    """A stage's JSON result, sealed (an object gets SEAL, the digest of its content, which read_json checks); NaN and
    infinity are refused (json.dumps would write the non-standard NaN)."""
    try:
        text = json.dumps(obj | {SEAL: json_seal(obj, place(path))} if isinstance(obj, dict) else obj, indent=2, sort_keys=True,
                          allow_nan=False)
    except ValueError:
        raise NatinvError(f"{path}: not written, a value is NaN or infinite ({', '.join(_non_finite(obj))})") from None
    atomic_write_bytes(path, (text + "\n").encode())


def _non_finite(obj: Any, key: str = "") -> list[str]:
    """The keys of non-finite numbers in a JSON-like tree (at most 3)."""
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [key or "(top)"]
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else []
    return [k for name, value in items for k in _non_finite(value, f"{key}.{name}" if key else str(name))][:3]


@dataclass(frozen=True)
class Chunked:
    """An array member of an .npz that is written chunk by chunk and never held whole: its shape, its dtype and a
    function that yields its rows in order, in chunks along the first axis."""

    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: Callable[[], Iterator[np.ndarray]]


def _write_member(fh, value: np.ndarray | Chunked) -> None:
    if isinstance(value, np.ndarray) and value.flags.c_contiguous and value.dtype.kind in "biufc":
        # the bytes np.lib.format.write_array writes, without its copies of up to 16 MB at a time
        np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(value))
        fh.write(memoryview(value.reshape(-1).view(np.uint8)))
        return
    if not isinstance(value, Chunked):
        np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
        return
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(value.dtype)), "fortran_order": False, "shape": value.shape}
    np.lib.format.write_array_header_2_0(fh, header) if _nbytes(value) >= 2**32 else np.lib.format.write_array_header_1_0(fh, header)
    rows = 0
    for chunk in value.chunks():
        chunk = np.ascontiguousarray(chunk, dtype=value.dtype)
        fh.write(chunk.tobytes())
        rows += len(chunk)
    if rows != value.shape[0]:
        raise ValueError(f"a chunked member yielded {rows} rows, its shape says {value.shape[0]}")


def _nbytes(value: np.ndarray | Chunked) -> int:
    return int(np.prod(value.shape, dtype=np.int64)) * np.dtype(value.dtype).itemsize


class _Hashing:
    """A file object that also feeds what is written to a hash."""

    def __init__(self, fh, digest):
        self.fh, self.digest = fh, digest

    def write(self, data) -> int:
        self.digest.update(data)
        return self.fh.write(data)


def _member_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return info


def _write_npz_to(target, arrays: dict[str, np.ndarray | Chunked], where: str = "") -> None:
    """An .npz (readable by np.load, uncompressed) with fixed timestamps, so equal arrays give identical bytes; each
    member is streamed into the archive (nothing is built in memory beside it). The last member, SEAL, is the sha256
    of its place (`where`) and the other members (their names and .npy bytes, in name order), computed as they are
    written."""
    digest = hashlib.sha256(f"{where}\n".encode())
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            value = arrays[name]
            digest.update(f"{name}.npy".encode())
            with zf.open(_member_info(name), "w", force_zip64=_nbytes(value) > 2**30) as fh:
                _write_member(_Hashing(fh, digest), value)
        with zf.open(_member_info(SEAL), "w") as fh:
            np.lib.format.write_array(fh, np.array(digest.hexdigest()), allow_pickle=False)


def npz_bytes(arrays: dict[str, np.ndarray | Chunked]) -> bytes:
    """The bytes write_npz writes for `arrays`."""
    buf = io.BytesIO()
    _write_npz_to(buf, arrays)
    return buf.getvalue()


def write_npz(path: Path, arrays: dict[str, np.ndarray | Chunked]) -> None:
    """`arrays` as an .npz at `path`, written atomically and streamed: peak memory is the largest chunk, not the file."""
    with atomic_path(path) as tmp:
        _write_npz_to(tmp, arrays, place(path))


def read_npz(path: Path, keys: Sequence[str] | None = None, prefix: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, or only `keys`, or only the members whose names start with `prefix` (the other
    members are not read)."""
    path = require_file(path)
    verify_npz(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            names = [n for n in z.files if n != SEAL] if keys is None else keys
            return {k: z[k] for k in names if prefix is None or k.startswith(prefix)}
    except Exception as exc:
        raise NatinvError(f"{path}: unreadable .npz ({type(exc).__name__}: {exc})") from None


def _member(path: Path, key: str) -> tuple[int, tuple[int, ...], bool, np.dtype]:
    """Where member `key`'s array starts in an .npz write_npz wrote (stored uncompressed) and its (shape, Fortran
    order, dtype), from its headers."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError("a compressed member (write_npz stores every member uncompressed)")
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)  # the member's local header: its name and extra field lengths end it
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        offset = fh.tell()
    if dtype.hasobject:
        raise ValueError("object arrays are not read")
    return offset, shape, fortran, dtype


@contextmanager
def _reading_member(path: Path, key: str) -> Iterator[None]:
    """A read of member `key`: the file verified first, and any failure one line naming the file and the member."""
    try:
        verify_npz(path)
        yield
    except NatinvError:
        raise
    except Exception as exc:
        raise NatinvError(f"{path}: unreadable .npz member {key!r} ({type(exc).__name__}: {exc})") from None


def read_rows(path: Path, key: str, rows: np.ndarray) -> np.ndarray:
    """Rows `rows` of member `key` of an .npz write_npz wrote, reading only those rows' bytes (the member, stored
    uncompressed, is memory-mapped in place)."""
    path = Path(path)
    with _reading_member(path, key):
        offset, shape, fortran, dtype = _member(path, key)
        mapped = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
        return np.array(mapped[rows])


READ_BLOCK = 1 << 24  # bytes per read of read_into


def read_into(path: Path, key: str, out: np.ndarray) -> None:
    """Member `key` of an .npz write_npz wrote, read from the file straight into `out` (a C-contiguous array of its
    shape and dtype, e.g. a shard's rows of a method's preallocated images): no array of its own in between, so a
    one-shard method's images are in memory once, not twice, while they are read."""
    path = Path(path)
    with _reading_member(path, key):
        offset, shape, fortran, dtype = _member(path, key)
        if tuple(shape) != out.shape or dtype != out.dtype or fortran or not out.flags.c_contiguous:  # write_npz writes C order
            raise ValueError(f"{shape} {dtype} does not fit {out.shape} {out.dtype}")
        view = memoryview(out.reshape(-1).view(np.uint8))
        with open(path, "rb", buffering=0) as fh:
            fh.seek(offset)
            done = 0
            while done < len(view):
                if not (n := fh.readinto(view[done:done + READ_BLOCK])):
                    raise ValueError(f"the file ends {len(view) - done} bytes before the member does")
                done += n


def npz_shapes(path: Path, keys: Sequence[str]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of members of an .npz, read from their headers (the arrays are not read)."""
    path = require_file(path)
    verify_npz(path)
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for key in keys:
                with zf.open(f"{key}.npy") as fh:
                    version = np.lib.format.read_magic(fh)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(fh)
                    out[key] = (tuple(shape), dtype)
    except Exception as exc:
        raise NatinvError(f"{path}: unreadable .npz ({type(exc).__name__}: {exc})") from None
    return out


def read_json(path: Path) -> dict:
    """A JSON object the package wrote (atomic_write_json), its seal checked and removed; else one line (damaged)."""
    path = require_file(path)
    try:
        obj = json.loads(path.read_bytes().decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise damaged(path, f"not valid JSON ({exc})") from None
    return unsealed(path, obj)
