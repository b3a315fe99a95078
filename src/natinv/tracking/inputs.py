"""A stage's inputs as MLflow datasets: one per file, named by what it is, with a digest of its content."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

DATASET_FILES = {"data": (".npz",), "teachers": (".safetensors",), "evaluators": (".safetensors",), "synth": (".npz",),
                 "meta": (".safetensors",)}  # the files that are the data; their JSON summaries are not


def datasets_of(exp: Path, files: Sequence[Path], dataset: str) -> list[tuple[str, str, list[Path]]]:
    """A job's input files as MLflow datasets (name, context, files), by the file contract's folders: each split of the
    real data, a teacher or evaluator checkpoint, a method's synthesized images (all its shards) or meta-learned start.
    Only the files that hold the data count (not the JSON beside them), so one input has one digest in every run that
    reads it; other stages' results, which the report reads, are not datasets."""
    groups: dict[tuple[str, str], list[Path]] = {}
    for f in files:
        parts = Path(f).relative_to(exp).parts
        if Path(f).suffix not in DATASET_FILES.get(parts[0], ()):
            continue
        stem = Path(parts[-1]).stem
        kind = {
            "data": (f"{dataset} {stem} (real)", "real data"),
            "teachers": (f"teacher {stem}", "teacher"),
            "evaluators": (f"evaluator {stem}", "evaluator"),
            "synth": (f"{'/'.join(parts[1:3][::-1])} images", "synthesized images"),
            "meta": (f"{stem}/{parts[-2]} meta-parameters", "meta-learned start"),
        }[parts[0]]
        groups.setdefault(kind, []).append(Path(f))
    return [(name, context, sorted(fs)) for (name, context), fs in groups.items()]


def mlflow_datasets(inputs: Sequence[tuple[str, str, list[Path]]]) -> list[Any]:
    """MLflow dataset inputs: per input, its name, a digest of its files' contents, where it is and how it is used."""
    import hashlib

    from mlflow.entities import Dataset, DatasetInput, InputTag

    out = []
    for name, context, files in inputs:
        digest = hashlib.sha256()
        for f in files:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        source = str(files[0].parent if len(files) > 1 else files[0])
        out.append(DatasetInput(Dataset(name, digest.hexdigest()[:16], "local", f'{{"uri": "{source}"}}'),
                                [InputTag("mlflow.data.context", context)]))
    return out
