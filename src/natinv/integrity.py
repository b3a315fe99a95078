"""Every file natinv writes is the one it reads back, there: each JSON and .npz carries a seal (SEAL), the digest of
its content and of its place (`{experiment}/{path in the file contract}`); checkpoints carry theirs in their metadata
(natinv.checkpoint). A file damaged, truncated, edited, of another experiment or put in another file's place is one
line naming it and the stage that makes it (`damaged`), never data; a read of what is no regular file (a FIFO that
would block it) is refused first (`require_file`).
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from natinv.errors import NatinvError

SEAL = "_sha256"  # a JSON object's key / an .npz's member: the sha256 of the rest of the file's content


def place(path: Path) -> str:
    """Where a file belongs, as its seal records it: `{experiment}/{path in the file contract}` for a stage output
    (natinv.pipeline), its name otherwise. A file copied from another experiment, or to the place of another file,
    no longer matches its seal."""
    from natinv.pipeline import contract_place

    return contract_place(Path(path)) or Path(path).name


def json_seal(obj: dict, where: str) -> str:
    """sha256 of a JSON object's place and content without its seal (canonical: sorted keys, no spaces)."""
    text = json.dumps({k: v for k, v in obj.items() if k != SEAL}, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(f"{where}\n{text}".encode()).hexdigest()


def unsealed(path: Path, obj: object) -> dict:
    """The JSON object read from `path` without its seal, once the seal matches its content and place; else one line."""
    if not isinstance(obj, dict) or SEAL not in obj:
        raise damaged(path, "it has no digest (every JSON natinv writes has one)")
    try:
        intact = json_seal(obj, place(path)) == obj[SEAL]
    except ValueError:  # NaN or infinity, which natinv never writes
        intact = False
    if not intact:
        raise damaged(path, "its content does not match the digest it was written with (or it was written for another "
                            "place: a file of another experiment, or another file)")
    return {k: v for k, v in obj.items() if k != SEAL}


def damaged(path: Path, what: str) -> NatinvError:
    """The one line for a file the package wrote that is no longer what it wrote: which file, what is wrong, which
    stage makes it (natinv.pipeline's file contract) and what to do."""
    from natinv.pipeline import maker_of

    return NatinvError(f"{path}: {what}; it was changed or damaged after {maker_of(path)} wrote it: delete it and run "
                       f"that stage again")


def require_file(path: Path, missing: str = "not found", error: type[NatinvError] = NatinvError) -> Path:
    """`path` as a Path when it is a regular file; else one line: `missing`, or, for something that is there but is
    no regular file (a FIFO, socket or device, which a read could wait on forever), that."""
    path = Path(path)
    if path.is_file():
        return path
    if path.exists() or path.is_symlink():
        raise error(f"{path}: not a regular file (a folder, FIFO, socket, device or dangling link); natinv reads only "
                    f"the regular files it wrote")
    raise error(f"{path}: {missing}")


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read a block at a time into one buffer."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


_VERIFIED: dict[Path, tuple[int, int, int]] = {}  # files checked by this process, with their (inode, size, mtime)


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def has_digest(path: Path, expected: str | None) -> bool:
    """Whether a file's bytes hash to `expected` (a digest recorded when natinv wrote it, e.g. in the manifest). A file
    that does is the one written, seal included, so verify_npz does not read it again in this process."""
    path = require_file(path)
    key = _stat_key(path)
    if file_sha256(path) != expected:
        return False
    _VERIFIED[path] = key
    return True


def verify_npz(path: Path) -> None:
    """An .npz the package wrote (write_npz) is unchanged: its members hash to its SEAL (read once per process while
    the file's inode, size and modification time stay the same); else one line (damaged)."""
    path = require_file(path)
    key = _stat_key(path)
    if _VERIFIED.get(path) == key:
        return
    digest = hashlib.sha256(f"{place(path)}\n".encode())
    try:
        with zipfile.ZipFile(path) as zf:
            # in the writer's order: by array name (sorting "a-b.npy" and "a.npy" as file names would swap them)
            names = sorted((n for n in zf.namelist() if n != f"{SEAL}.npy"), key=lambda n: n.removesuffix(".npy"))
            if f"{SEAL}.npy" not in zf.namelist():
                raise damaged(path, "it has no digest (every .npz natinv writes has one)")
            with zf.open(f"{SEAL}.npy") as fh:
                sealed = str(np.lib.format.read_array(fh, allow_pickle=False))
            for name in names:
                digest.update(name.encode())
                with zf.open(name) as fh:
                    while block := fh.read(1 << 22):
                        digest.update(block)
    except NatinvError:
        raise
    except Exception as exc:
        raise damaged(path, f"unreadable .npz ({type(exc).__name__}: {exc})") from None
    if digest.hexdigest() != sealed:
        raise damaged(path, "its content does not match the digest it was written with (or it was written for another "
                            "place: a file of another experiment, or another file)")
    _VERIFIED[path] = key
