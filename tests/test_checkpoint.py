"""Checkpoints: safetensors round trip, clear errors, safe import of PyTorch files."""
import pytest
import torch

from natinv.checkpoint import ModelMeta, import_torch_checkpoint, load_model, save_model
from natinv.errors import CheckpointError
from natinv.models import build_model

META = ModelMeta("resnet8", 10, 3, 32, 4, [0.5] * 3, [0.25] * 3)


def test_round_trip(tmp_path):
    model = build_model("resnet8", 10, 3, 4).eval()
    save_model(tmp_path / "m.safetensors", model, META)
    loaded, meta = load_model(tmp_path / "m.safetensors")
    x = torch.randn(2, 3, 32, 32)
    assert meta == META
    assert torch.equal(model(x), loaded.eval()(x))


def test_missing_corrupt_and_mismatched(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors: checkpoint not found"):
        load_model(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="junk.safetensors: not a readable safetensors checkpoint"):
        load_model(tmp_path / "junk.safetensors")
    model = build_model("resnet8", 10, 3, 8)
    save_model(tmp_path / "wide.safetensors", model, META)  # metadata says width 4, tensors are width 8
    with pytest.raises(CheckpointError, match="does not fit architecture resnet8 .*mis-shaped"):
        load_model(tmp_path / "wide.safetensors")


def test_import_uses_weights_only(tmp_path):
    model = build_model("resnet8", 10, 3, 4)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "ok.pt")
    import_torch_checkpoint(tmp_path / "ok.pt", META, tmp_path / "ok.safetensors")
    loaded, _ = load_model(tmp_path / "ok.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"state_dict": model.state_dict(), "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot be loaded with weights_only=True"):
        import_torch_checkpoint(tmp_path / "evil.pt", META, tmp_path / "evil.safetensors")
    assert not (tmp_path / "evil.safetensors").exists()
    torch.save(build_model("resnet18", 10, 3, 4).state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: does not fit architecture resnet8"):
        import_torch_checkpoint(tmp_path / "other.pt", META, tmp_path / "o.safetensors")


def test_diverged_weights_are_never_written(tmp_path):
    model = build_model("resnet8", 10, 3, 4)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("inf")
    with pytest.raises(CheckpointError, match="m.safetensors: 1 tensors hold NaN or infinite values .*nothing was written"):
        save_model(tmp_path / "m.safetensors", model, META)
    assert list(tmp_path.iterdir()) == []


def test_the_weights_digest_catches_weights_swapped_under_the_metadata(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save

    save_model(tmp_path / "a.safetensors", build_model("resnet8", 10, 3, 4), META)
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    torch.manual_seed(1)
    other = {k: v.contiguous() for k, v in build_model("resnet8", 10, 3, 4).state_dict().items()}
    (tmp_path / "b.safetensors").write_bytes(save(other, metadata=metadata))  # same arch, other weights, old metadata
    with pytest.raises(CheckpointError, match="b.safetensors: its weights or metadata are not the ones it was written with"):
        load_model(tmp_path / "b.safetensors")
