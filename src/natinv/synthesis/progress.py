"""A shard's saved progress, so that a shard stopped by `kill -9`, a time limit or a preemption continues where it
was instead of starting again from batch 0, and ends with the same bytes as a run that was never stopped.

A method saves its state (the images so far, where it is in its batch plan, a co-trained student and its optimizer,
random generators, parameters carried from batch to batch) at a batch (or generator step) boundary, at most every
`engine.save_every_minutes`, as one safetensors file beside the shard, `shard-N.progress.safetensors`, written to a
temporary name and renamed. Its metadata holds the rest of the state (numbers, names, the nesting of dicts, lists and
tuples) as JSON and the job's digest (its parameters and code): a file made by other settings or other code is not
resumed from. Nothing in it is ever unpickled. The shard removes the file once its own files are written.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from natinv.errors import NatinvError

_TENSOR, _DICT, _TUPLE = "__tensor__", "__dict__", "__tuple__"


def flatten(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """`tree` (dicts with str or int keys, lists, tuples, tensors, numbers, strings, None) as JSON, its tensors moved
    to `tensors` (on the CPU) under numbered names."""
    if isinstance(tree, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = tree.detach().to("cpu").contiguous()
        return {_TENSOR: name}
    if isinstance(tree, dict):
        return {_DICT: [[k, flatten(v, tensors)] for k, v in tree.items()]}
    if isinstance(tree, tuple):
        return {_TUPLE: [flatten(v, tensors) for v in tree]}
    if isinstance(tree, list):
        return [flatten(v, tensors) for v in tree]
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot save a {type(tree).__name__} in a shard's progress")


def unflatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, dict):
        if _TENSOR in node:
            return tensors[node[_TENSOR]]
        if _TUPLE in node:
            return tuple(unflatten(v, tensors) for v in node[_TUPLE])
        return {k: unflatten(v, tensors) for k, v in node[_DICT]}
    if isinstance(node, list):
        return [unflatten(v, tensors) for v in node]
    return node


def _digest(tensors: dict[str, torch.Tensor], state: str) -> str:
    """sha256 of a progress file's tensors and its state's JSON: what a resume relies on."""
    import hashlib

    from natinv.checkpoint import weights_digest

    return hashlib.sha256(f"{weights_digest(tensors)}|{state}".encode()).hexdigest()


@dataclass
class Progress:
    """Where one shard saves and finds its progress. `path` None: the shard saves nothing (a test, a benchmark)."""

    path: Path | None = None
    job: str = ""  # the job's digest: a file saved by another job (other parameters or code) is not resumed from
    every_s: float = 600.0  # at most this often (0: at every boundary)
    log: object = print
    earlier_s: float = 0.0  # wall seconds the shard had run before the saved state it resumed from
    _last: float = field(default_factory=time.monotonic)
    _started: float = field(default_factory=time.monotonic)

    def load(self) -> dict | None:
        """The saved state, or None when there is none for this job (a file for other settings is said and ignored)."""
        if self.path is None or not self.path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            if meta.get("job") != self.job:
                self.log(f"{self.path}: saved by other parameters or code; starting the shard from the beginning")
                return None
            if meta.get("sha256") != _digest(tensors, meta["state"]):
                self.log(f"{self.path}: its content does not match the digest it was saved with (changed since); "
                         f"starting the shard from the beginning")
                return None
            state = unflatten(json.loads(meta["state"]), tensors)
            self.earlier_s = float(meta.get("seconds", 0.0))
            return state
        except Exception as exc:  # damaged (a disk that filled up mid-rename would not leave one, but a copy might)
            self.log(f"{self.path}: unreadable ({type(exc).__name__}: {exc}); starting the shard from the beginning")
            return None

    def due(self, last: bool = False) -> bool:
        """Whether a boundary reached now should save (never at the last one: the shard's own files follow)."""
        return self.path is not None and not last and time.monotonic() - self._last >= self.every_s

    def save(self, state: dict, where: str) -> None:
        from safetensors.torch import save_file

        from natinv.io import atomic_path

        tensors: dict[str, torch.Tensor] = {}
        text = json.dumps(flatten(state, tensors))
        meta = {"job": self.job, "state": text, "where": where, "sha256": _digest(tensors, text),
                "seconds": str(self.earlier_s + time.monotonic() - self._started)}
        try:
            with atomic_path(self.path) as tmp:
                save_file(tensors, str(tmp), metadata=meta)
        except NatinvError as exc:  # a full disk costs the resume point, not the shard
            self.log(f"warning: progress not saved ({exc})")
        self._last = time.monotonic()

    def clear(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)

