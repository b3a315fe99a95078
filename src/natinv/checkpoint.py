"""Model checkpoints as safetensors with the architecture in the metadata; never unpickled.

A user's PyTorch checkpoint can be imported with `torch.load(weights_only=True)` (no arbitrary code).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from natinv.errors import CheckpointError
from natinv.integrity import place, require_file
from natinv.io import atomic_write_bytes
from natinv.models import StagedNet, build_model


@dataclass
class ModelMeta:
    arch: str
    num_classes: int
    in_channels: int
    image_size: int
    width: int | None
    mean: list[float]
    std: list[float]


DIGEST = "sha256"  # in the metadata: the digest of the weights and every other metadata field (checkpoint_digest)


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: which weights a checkpoint holds."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def checkpoint_digest(state: dict[str, torch.Tensor], meta: ModelMeta, where: str = "") -> str:
    """sha256 over the weights (weights_digest), every metadata field and the checkpoint's place (natinv.io.place: a
    teacher of another experiment is not this one's): what a checkpoint's reader relies on."""
    text = json.dumps(asdict(meta), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{where}|{weights_digest(state)}|{text}".encode()).hexdigest()


def _non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """The names of the float tensors that hold NaN or infinite values."""
    return [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]


def save_model(path: Path, model: StagedNet, meta: ModelMeta) -> None:
    """Write the weights and their architecture; weights holding NaN or infinite values are refused (nothing written)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if bad := _non_finite(state):
        raise CheckpointError(f"{path}: {len(bad)} tensors hold NaN or infinite values (first: {bad[0]}); the training "
                              f"diverged, nothing was written")
    # one metadata entry: safetensors orders several in a hash map, which would make equal checkpoints differ in bytes
    metadata = {"natinv": json.dumps(asdict(meta) | {DIGEST: checkpoint_digest(state, meta, place(path))})}
    atomic_write_bytes(Path(path), save(state, metadata=metadata))


def _meta_from_json(path: Path, raw: str) -> tuple[ModelMeta, str]:
    """The metadata's fields, each of the type the networks need, and the checkpoint's digest, or one line naming
    what is wrong."""
    from natinv.models import ARCHS

    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: natinv metadata is not valid JSON ({exc})") from None
    names = [f.name for f in fields(ModelMeta)]
    digest = obj.pop(DIGEST, None) if isinstance(obj, dict) else None
    if not isinstance(obj, dict) or set(obj) != set(names):
        have = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: natinv metadata has keys {have}; expected exactly {names} and {DIGEST}")
    for key, low in {"num_classes": 2, "in_channels": 1, "image_size": 1, "width": 1}.items():
        v = obj[key]
        if not (key == "width" and v is None) and (not isinstance(v, int) or isinstance(v, bool) or v < low):
            raise CheckpointError(f"{path}: metadata {key} = {v!r}; expected an integer >= {low}"
                                  + (" or null" if key == "width" else ""))
    if obj["arch"] not in ARCHS:
        raise CheckpointError(f"{path}: metadata arch = {obj['arch']!r}; expected one of {', '.join(ARCHS)}")
    for key in ("mean", "std"):
        v = obj[key]
        if (not isinstance(v, list) or len(v) != obj["in_channels"]
                or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in v)
                or (key == "std" and min(v) <= 0)):
            raise CheckpointError(f"{path}: metadata {key} = {v!r}; expected {obj['in_channels']} finite numbers"
                                  + (" > 0" if key == "std" else ""))
    if not isinstance(digest, str):
        raise CheckpointError(f"{path}: natinv metadata has no {DIGEST} (every checkpoint natinv writes has one); a "
                              f"PyTorch state_dict comes in through `natinv import-checkpoint`")
    return ModelMeta(**obj), digest


def _read_header(path: Path) -> tuple[ModelMeta, str]:
    """(the architecture, the checkpoint's digest) from its metadata."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("natinv")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file has no natinv metadata (arch, classes); import it with import_torch_checkpoint")
    return _meta_from_json(path, raw)



def is_network(path: Path) -> bool:
    """Whether `path` is a network checkpoint natinv wrote (safetensors with its architecture in the metadata)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return "natinv" in (f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return False


def _fit(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        first = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected
                 else f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, model needs {tuple(own[wrong[0]].shape)}")
        raise CheckpointError(f"{path}: does not fit architecture {arch} ({len(missing)} missing, {len(unexpected)} unexpected, "
                              f"{len(wrong)} mis-shaped tensors; first: {first})")
    model.load_state_dict(state)


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[StagedNet, ModelMeta]:
    path = require_file(path, "checkpoint not found", CheckpointError)
    meta, digest = _read_header(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors checkpoint ({exc})") from None
    if checkpoint_digest(state, meta, place(path)) != digest:
        from natinv.pipeline import maker_of

        raise CheckpointError(f"{path}: its weights or metadata are not the ones it was written with for this place "
                              f"(sha256 differs): altered after {maker_of(path)} saved it, or a checkpoint of another "
                              f"experiment or file: delete it and run that stage again")
    if bad := _non_finite(state):
        raise CheckpointError(f"{path}: {len(bad)} tensors hold NaN or infinite values (first: {bad[0]})")
    model = build_model(meta.arch, meta.num_classes, meta.in_channels, meta.width)
    _fit(model, state, path, meta.arch)
    return model.to(device), meta


def _adopted_state(path: Path, meta: ModelMeta) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, after checking that natinv metadata in it (if any) was made for data of
    this shape and normalization."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("natinv")
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if raw is not None:
        theirs, _ = _meta_from_json(path, raw)
        for key in ("num_classes", "in_channels", "image_size", "mean", "std"):
            if getattr(theirs, key) != getattr(meta, key):
                raise CheckpointError(f"{path}: trained on other data ({key} {getattr(theirs, key)!r}; this experiment's "
                                      f"data have {getattr(meta, key)!r})")
    return state


def import_torch_checkpoint(path: Path, meta: ModelMeta, out: Path) -> None:
    """Convert a user's PyTorch state_dict (.pt/.pth) into a natinv safetensors checkpoint, safely; or adopt a
    .safetensors file (another experiment's teacher: its natinv metadata, when it has some, must describe this
    experiment's data, or the teacher was trained on other data)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        obj = _adopted_state(path, meta)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot be loaded with weights_only=True ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = build_model(meta.arch, meta.num_classes, meta.in_channels, meta.width)
    _fit(model, state, path, meta.arch)
    save_model(out, model, meta)


def _state_digest(state: dict[str, torch.Tensor], path: Path) -> str:
    return hashlib.sha256(f"{place(path)}|{weights_digest(state)}".encode()).hexdigest()


def save_state(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Tensors of a module that is not a network of `models` (ni-fast's meta-parameters) as safetensors, atomically."""
    from safetensors.torch import save

    from natinv.io import atomic_write_bytes

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write_bytes(Path(path), save(tensors, metadata={DIGEST: _state_digest(tensors, path)}))


def load_state(path: Path, model: torch.nn.Module, what: str) -> torch.nn.Module:
    """Load `save_state`'s file into `model` (whose layout `what` names), refusing a missing, corrupt, ill-fitting or
    non-finite file with one line."""
    path = require_file(path, "not found", CheckpointError)
    try:
        with safe_open(str(path), framework="pt") as f:
            digest = (f.metadata() or {}).get(DIGEST)
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors file ({exc})") from None
    if digest != _state_digest(state, path):
        from natinv.pipeline import maker_of

        raise CheckpointError(f"{path}: its tensors are not the ones it was written with (sha256 "
                              f"{'missing' if digest is None else 'differs'}); it was altered after {maker_of(path)} "
                              f"saved it: delete it and run that stage again")
    if bad := _non_finite(state):
        raise CheckpointError(f"{path}: {len(bad)} tensors hold NaN or infinite values (first: {bad[0]})")
    _fit(model, state, path, what)
    return model
