"""What the stage runners share: choosing a configured key, new networks and their seeds, the images a student
trains on, one training run, and writing a stage's JSON result."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from natinv import data, paths
from natinv.checkpoint import ModelMeta
from natinv.config import Config, seeds
from natinv.errors import ConfigError
from natinv.io import atomic_write_json
from natinv.models import build_model, check_input_size
from natinv.runtime import derive_seed, log
from natinv.tracking import Outcome
from natinv.train import SGDSchedule, epoch_eval, evaluate, fit


def choose(key: str, allowed: Iterable[str], what: str) -> None:
    if key not in allowed:
        raise ConfigError(f"{what} = {key!r}: expected one of {', '.join(allowed) or '(none configured)'}")


def dataset(cfg: Config) -> data.Dataset:
    return data.load(paths.data_dir(cfg.exp_dir))


def new_model(ds: data.Dataset | ModelMeta, spec, seed: int) -> torch.nn.Module:
    """A randomly initialised network of `spec` for the dataset (or a checkpoint's shape), weights drawn from `seed`."""
    check_input_size(spec.arch, ds.image_size)
    torch.manual_seed(seed)
    return build_model(spec.arch, ds.num_classes, ds.in_channels, spec.width)


def student_seed(cfg: Config, teacher: str, method: str, student: str) -> int:
    """Initial weights of the student distilled from (teacher, method): by the kd stage, or co-trained by synthesis."""
    return derive_seed(cfg.seed, "student", teacher, method, student)


def dataset_meta(ds: data.Dataset, spec) -> ModelMeta:
    return ModelMeta(spec.arch, ds.num_classes, ds.in_channels, ds.image_size, spec.width, list(ds.mean), list(ds.std))


def schedule(section, images: int) -> SGDSchedule:
    """The SGD schedule of a student-training section (kd, scratch, prune) for `images` training images."""
    return SGDSchedule(section.epochs, min(section.batch_size, images), section.lr, section.momentum, section.weight_decay)


def load_synthesized(cfg: Config, teacher: str, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All shards of (teacher, method): the stored float16 tensors, kept in float16 (training and evaluation convert
    each batch to float32: the same values, half the memory of a float32 copy) and labels."""
    arrays = paths.read_shards(cfg.exp_dir, teacher, method, cfg.shards_of(method), ("images", "labels"))
    return torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"])


def synthesized_count(cfg: Config, teacher: str, method: str) -> int:
    """How many images (teacher, method)'s shards hold, read from their headers."""
    from natinv.io import npz_shapes

    return sum(npz_shapes(paths.shard_npz(cfg.exp_dir, teacher, method, s), ("labels",))["labels"][0][0]
               for s in range(cfg.shards_of(method)))


def training_images(cfg: Config, ds: data.Dataset, teacher: str, method: str, real_images: int | None,
                    seed_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What a student trains on: (teacher, method)'s synthesized tensors (normalized, float16) and labels, or for
    method=real as many real training images (`real_images`, default synthesis.num_images; uint8 pixels) with their
    labels."""
    if seeds.split(method)[0] == "real":  # uint8 pixels: training normalizes each batch (train.model_input)
        return data.real_pixels(ds, real_images or cfg.synthesis.num_images, derive_seed(cfg.seed, seed_name))
    choose(method, cfg.job_methods, "method")
    return load_synthesized(cfg, teacher, method)


@dataclass
class Training:
    history: list[dict]  # one entry per epoch (train loss, accuracy on a test subset)
    seconds: float


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Callable, sched: SGDSchedule,
          ds: data.Dataset, device: torch.device, seed: int, desc: str, precision: str | None = None) -> Training:
    """Train `model` on (x, y) (uint8 pixels of `ds`, or normalized images), watching the test set after every epoch;
    precision: the params' engine.train_autocast."""
    xt, yt = data.test_set(ds)
    start = time.perf_counter()
    history = fit(model, x, y, loss, sched, device, seed, on_epoch=epoch_eval(model, xt, yt, device), desc=desc,
                  normalization=(ds.mean, ds.std), precision=precision)
    return Training(history, time.perf_counter() - start)


def test_scores(model: torch.nn.Module, ds: data.Dataset, device: torch.device) -> dict[str, float]:
    """{"acc", "loss"} on the whole test set."""
    return evaluate(model, *data.test_set(ds), device)


def finish(path: Path, result: dict, message: str, artifacts: Iterable[Path] = ()) -> Outcome:
    """Write a stage's JSON result, say what it did, and hand both to MLflow."""
    atomic_write_json(path, result)
    log(message)
    return Outcome(result, artifacts=[path, *artifacts])
