"""The file contract of every stage (the README's stage table), in one place."""
from __future__ import annotations

from pathlib import Path


def data_dir(exp: Path) -> Path:
    return exp / "data"


def teacher_weights(exp: Path, teacher: str) -> Path:
    return exp / "teachers" / f"{teacher}.safetensors"


def teacher_json(exp: Path, teacher: str) -> Path:
    return exp / "teachers" / f"{teacher}.json"


def shard_npz(exp: Path, teacher: str, method: str, shard: int) -> Path:
    return exp / "synth" / teacher / method / f"shard-{shard}.npz"


def shard_json(exp: Path, teacher: str, method: str, shard: int) -> Path:
    return exp / "synth" / teacher / method / f"shard-{shard}.json"


def kd_json(exp: Path, teacher: str, method: str, student: str) -> Path:
    return exp / "kd" / teacher / method / f"{student}.json"


def kd_weights(exp: Path, teacher: str, method: str, student: str) -> Path:
    return exp / "kd" / teacher / method / f"{student}.safetensors"


def metrics_json(exp: Path, teacher: str, method: str) -> Path:
    return exp / "metrics" / teacher / f"{method}.json"


def evaluator_weights(exp: Path, evaluator: str) -> Path:
    return exp / "evaluators" / f"{evaluator}.safetensors"


def evaluator_json(exp: Path, evaluator: str) -> Path:
    return exp / "evaluators" / f"{evaluator}.json"


def feature_cache(results: Path) -> Path:
    """Real images' features for torch-fidelity metrics, shared by experiments (named by the images' content)."""
    return results / "feature-cache"


def tsne_files(exp: Path, teacher: str) -> dict[str, Path]:
    base = exp / "metrics" / teacher
    return {"json": base / "tsne.json", "npz": base / "tsne.npz", "png": base / "tsne.png"}


def scratch_json(exp: Path, teacher: str, method: str, student: str) -> Path:
    return exp / "scratch" / teacher / method / f"{student}.json"


def prune_json(exp: Path, teacher: str, method: str, ratio: float) -> Path:
    return exp / "prune" / teacher / method / f"ratio-{ratio:g}.json"
