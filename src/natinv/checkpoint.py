"""Model checkpoints as safetensors with the architecture in the metadata; never unpickled.

A user's PyTorch checkpoint can be imported with `torch.load(weights_only=True)` (no arbitrary code).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from natinv.errors import CheckpointError
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


def save_model(path: Path, model: StagedNet, meta: ModelMeta) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(Path(path), save(state, metadata={"natinv": json.dumps(asdict(meta))}))


def read_meta(path: Path) -> ModelMeta:
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("natinv")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file has no natinv metadata (arch, classes); import it with import_torch_checkpoint")
    return ModelMeta(**json.loads(raw))


def _fit(model: StagedNet, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
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
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    meta = read_meta(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors checkpoint ({exc})") from None
    model = build_model(meta.arch, meta.num_classes, meta.in_channels, meta.width)
    _fit(model, state, path, meta.arch)
    return model.to(device), meta


def import_torch_checkpoint(path: Path, meta: ModelMeta, out: Path) -> None:
    """Convert a user's PyTorch state_dict (.pt/.pth) into a natinv safetensors checkpoint, safely."""
    path = Path(path)
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
