"""Datasets as in-memory uint8 tensors (N, C, H, W), normalization, and batched GPU/CPU-friendly augmentation.

fashion-mnist: the configured root, then Debian's dataset-fashion-mnist package, then a download; 28x28 is
padded to 32x32. cifar10/cifar100: torchvision (downloaded when online). custom: an image folder or an .npz.
`standin`: no dataset is read; an offline stand-in with the dataset's shape and class count is made (smoke runs).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from natinv import datasets
from natinv.config import DataConfig
from natinv.errors import DataNotFound
from natinv.models import MIN_IMAGE_SIZE
from natinv.integrity import damaged, file_sha256, has_digest, require_file
from natinv.io import atomic_write_json, read_json, read_npz, write_npz
from natinv.user_data import load_custom

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]

# Per-dataset normalization constants (training-set channel mean/std in [0, 1]); fashion-mnist after padding.
NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion-mnist": ((0.2190,), (0.3318,)),
}


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]


# ----------------------------------------------------------------------------------- normalization


def normalizer(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str = "cpu"):
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return m, s


def pixel_range(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str = "cpu"):
    """(lo, hi), each (1, C, 1, 1): the valid pixel range [0, 1] of every channel in normalized space."""
    m, s = normalizer(mean, std, device)
    return (0 - m) / s, (1 - m) / s


def normalize(x_uint8: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m, s = normalizer(mean, std, x_uint8.device)
    return (x_uint8.float() / 255.0 - m) / s


def render_uint8(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], scaling: str = "clamp") -> torch.Tensor:
    """De-normalize a synthesized batch to uint8 pixels: clamp to [0, 1], or per-image min-max (official code)."""
    m, s = normalizer(mean, std, x.device)
    img = x.float() * s + m
    if scaling == "minmax":
        lo = img.amin(dim=(1, 2, 3), keepdim=True)
        hi = img.amax(dim=(1, 2, 3), keepdim=True)
        img = (img - lo) / (hi - lo).clamp_min(1e-8)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


# ------------------------------------------------------------------------------------- augmentation


def crop_flip(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, per image, batched (no Python loop per image)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dev = x.device
    where = generator.device if generator is not None else dev  # drawn on the generator's device, then used on x's
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=where).to(dev)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=where).to(dev)
    flip = (torch.rand(n, generator=generator, device=where) < 0.5).to(dev)
    rows = (oy.view(n, 1) + torch.arange(h, device=dev).view(1, h))  # (n, h)
    cols = torch.arange(w, device=dev).view(1, w).expand(n, w)
    cols = torch.where(flip.view(n, 1), w - 1 - cols, cols) + ox.view(n, 1)  # (n, w)
    idx_r = rows.view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, idx_r)
    idx_c = cols.view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    return out.gather(3, idx_c)


# ------------------------------------------------------------------------------------------ sources

def _make_standin(cfg: DataConfig) -> tuple:
    """Images with the dataset's shape and class count, made here from a fixed seed: each class is a smooth random
    pattern (a 4x4 random image upsampled), each image that pattern shifted by up to 2 pixels, its brightness scaled
    by up to 15 % and noised. The nearest class mean labels all of it, so every stage has something to learn; it is
    not the dataset."""
    channels, size, classes = datasets.SHAPES[cfg.dataset]
    n_train = cfg.train_limit or datasets.STANDIN_SIZES[0]
    n_test = cfg.test_limit or datasets.STANDIN_SIZES[1]
    rng = np.random.default_rng(20220222)
    coarse = torch.from_numpy(rng.random((classes, channels, 4, 4), dtype=np.float32))
    patterns = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False).numpy()

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(n) % classes)
        shifts = rng.integers(-2, 3, (n, 2))
        x = np.stack([np.roll(patterns[c], tuple(s), axis=(1, 2)) for c, s in zip(labels, shifts)])
        x = x * rng.uniform(0.85, 1.15, (n, 1, 1, 1)) + rng.normal(0, 0.05, x.shape)
        return (x.clip(0, 1) * 255).round().astype(np.uint8), labels.astype(np.int64)

    x, y = images(n_train)
    xt, yt = images(n_test)
    return x, y, xt, yt, classes, f"stand-in with {cfg.dataset}'s shape (random class patterns, not real images)"


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_fashion(root: Path) -> Path | None:
    for folder in (root / "FashionMNIST" / "raw", root / "fashion-mnist", root, DEBIAN_FASHION_MNIST):
        if all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in FASHION_FILES):
            return folder
    return None


def _idx_file(folder: Path, name: str) -> Path:
    return folder / name if (folder / name).exists() else folder / f"{name}.gz"


def _load_fashion(cfg: DataConfig) -> tuple:
    root = Path(cfg.root)
    folder = _find_fashion(root)
    if folder is None:
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(root), train=True, download=True)
            FashionMNIST(str(root), train=False, download=True)
        except Exception as exc:  # offline: URLError, socket errors, ...
            raise DataNotFound(
                f"fashion-mnist not found under {root}/FashionMNIST/raw or {DEBIAN_FASHION_MNIST}, and the download "
                f"failed ({type(exc).__name__}); install Debian's dataset-fashion-mnist or put the four idx files in {root}/FashionMNIST/raw"
            ) from None
        folder = _find_fashion(root)
    arrays = [_read_idx(_idx_file(folder, f)) for f in FASHION_FILES]
    def pad(images: np.ndarray) -> np.ndarray:  # (N, 28, 28) -> (N, 1, 32, 32)
        return np.pad(images[:, None], ((0, 0), (0, 0), (2, 2), (2, 2)))

    return pad(arrays[0]), arrays[1], pad(arrays[2]), arrays[3], 10, str(folder)


def _load_cifar(cfg: DataConfig) -> tuple:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls, n = (CIFAR10, 10) if cfg.dataset == "cifar10" else (CIFAR100, 100)
    try:
        train = cls(cfg.root, train=True, download=True)
        test = cls(cfg.root, train=False, download=True)
    except Exception as exc:
        raise DataNotFound(
            f"{cfg.dataset} not found under {Path(cfg.root) / cls.base_folder} and the download failed "
            f"({type(exc).__name__}); put the extracted python-version archive there or set data.root"
        ) from None
    def nchw(d) -> np.ndarray:
        return np.ascontiguousarray(d.data.transpose(0, 3, 1, 2))

    return nchw(train), np.asarray(train.targets), nchw(test), np.asarray(test.targets), n, str(Path(cfg.root) / cls.base_folder)


MAX_IMAGE_SIZE = 256  # the networks are CIFAR-style; larger images only exhaust memory


def check_arrays(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray, num_classes: int, source: str) -> None:
    """The data at the door: images in both splits, same shape in both, a size the networks take, and labels that are
    class indices 0..K-1 (test labels too) with every class in the training split (K >= 2)."""
    for split, xs in (("training", x), ("test", xt)):
        if len(xs) == 0:
            raise DataNotFound(f"{source}: 0 {split} images (after data.train_limit / test_limit); expected at least one")
    if xt.shape[1:] != x.shape[1:]:
        raise DataNotFound(f"{source}: test images are {xt.shape[1:]}, training images {x.shape[1:]}; expected the same shape")
    if x.shape[-1] < MIN_IMAGE_SIZE:
        raise DataNotFound(f"{source}: images are {x.shape[-2]}x{x.shape[-1]}; at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} "
                           f"are needed (set data.image_size to resize an image folder)")
    if x.shape[-1] > MAX_IMAGE_SIZE:
        raise DataNotFound(f"{source}: images are {x.shape[-2]}x{x.shape[-1]}; at most {MAX_IMAGE_SIZE}x{MAX_IMAGE_SIZE} are "
                           f"supported (set data.image_size to resize an image folder)")
    for split, ys in (("training", y), ("test", yt)):
        if ys.min() < 0 or ys.max() >= max(num_classes, 1):
            raise DataNotFound(f"{source}: {split} labels range {int(ys.min())}..{int(ys.max())}; expected class indices "
                               f"0..{num_classes - 1}")
    present = np.unique(y)
    if len(present) < 2:
        raise DataNotFound(f"{source}: the training labels hold {len(present)} class ({present.tolist()}); expected at least 2")
    if len(present) < num_classes:
        missing = sorted(set(range(num_classes)) - set(present.tolist()))
        raise DataNotFound(f"{source}: labels must be 0..K-1 with every class in the training split; {len(missing)} of "
                           f"{num_classes} classes have no training image (first: {missing[:5]})")
    # test labels inside 0..K-1 and every one of those in training: the test classes are a subset of the training's


# ---------------------------------------------------------------------------------------- prepare/load


CLASS_NAMES = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


def class_names(cfg: DataConfig, num_classes: int) -> list[str]:
    """The name of each class, in label order: the dataset's own, an image folder's class folders; else the numbers."""
    if not cfg.standin:
        if cfg.dataset in CLASS_NAMES:
            return CLASS_NAMES[cfg.dataset]
        if cfg.dataset == "cifar100":
            from torchvision.datasets import CIFAR100

            return list(CIFAR100(cfg.root, train=False, download=False).classes)
        if cfg.path is not None and Path(cfg.path).is_dir():
            from natinv.user_data import folder_classes

            return folder_classes(Path(cfg.path))
    return [str(k) for k in range(num_classes)]


STATS_BLOCK_BYTES = 2**20  # pixels counted at a time by channel_stats (9x that while bincount widens them)


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (floored at 1e-3) of uint8 pixels (N, C, H, W), scaled to [0, 1]: from each channel's
    256-value histogram, counted a block of images at a time. The sums are exact integers whatever the set's size, and
    no float copy of the set is made (at 256k 32x32 colour images, a float64 one is 6 GB)."""
    counts = np.zeros((x.shape[1], 256), np.int64)
    rows = max(1, STATS_BLOCK_BYTES // max(1, x[0].nbytes))
    for i in range(0, len(x), rows):
        block = x[i:i + rows]
        for c in range(x.shape[1]):
            counts[c] += np.bincount(block[:, c].ravel(), minlength=256)
    values = np.arange(256) / 255.0
    n = counts.sum(axis=1)
    mean = counts @ values / n
    var = (counts * (values[None] - mean[:, None]) ** 2).sum(axis=1) / n
    return tuple(float(m) for m in mean), tuple(float(max(v, 1e-3)) for v in np.sqrt(var))


def prepare(cfg: DataConfig, out_dir: Path) -> dict:
    """The `data` stage: fetch the dataset, write canonical uint8 arrays and a manifest with checksums."""
    if cfg.standin:
        x, y, xt, yt, n, source = _make_standin(cfg)
    elif cfg.dataset == "fashion-mnist":
        x, y, xt, yt, n, source = _load_fashion(cfg)
    elif cfg.dataset in ("cifar10", "cifar100"):
        x, y, xt, yt, n, source = _load_cifar(cfg)
    else:
        x, y, xt, yt, n, source = load_custom(cfg)
    x, y = x[: cfg.train_limit], y[: cfg.train_limit]
    xt, yt = xt[: cfg.test_limit], yt[: cfg.test_limit]
    check_arrays(x, y, xt, yt, n, source)
    if cfg.dataset in NORMALIZATION:
        mean, std = NORMALIZATION[cfg.dataset]
    else:  # user data: constants from its own training split
        mean, std = channel_stats(x)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, (xs, ys) in {"train": (x, y), "test": (xt, yt)}.items():
        path = out_dir / f"{split}.npz"
        write_npz(path, {"images": np.ascontiguousarray(xs), "labels": ys.astype(np.int64)})
        files[path.name] = file_sha256(path)
    manifest = {
        "dataset": cfg.dataset, "standin": cfg.standin, "source": source, "num_classes": n, "in_channels": int(x.shape[1]),
        "image_size": int(x.shape[-1]), "train_images": len(x), "test_images": len(xt),
        "mean": list(mean), "std": list(std), "classes": class_names(cfg, n), "sha256": files,
    }
    atomic_write_json(out_dir / "manifest.json", manifest)
    return manifest


def read_manifest(out_dir: Path) -> dict:
    path = require_file(out_dir / "manifest.json", "not found; run `python -m natinv data` first", DataNotFound)
    return read_json(path)


def load(out_dir: Path) -> Dataset:
    """Load what the `data` stage wrote."""
    m = read_manifest(out_dir)
    for name in ("train.npz", "test.npz"):  # the files this manifest was written with, not another run's
        if (out_dir / name).is_file() and not has_digest(out_dir / name, m["sha256"].get(name)):
            raise damaged(out_dir / name, f"its sha256 is not the one {out_dir / 'manifest.json'} records (a file of "
                                          f"another run or experiment?)")
    tr, te = read_npz(out_dir / "train.npz"), read_npz(out_dir / "test.npz")
    t = torch.from_numpy
    return Dataset(m["dataset"], t(tr["images"]), t(tr["labels"]), t(te["images"]), t(te["labels"]),
                   m["num_classes"], tuple(m["mean"]), tuple(m["std"]))



def real_indices(ds: Dataset, count: int, seed: int) -> torch.Tensor:
    """`count` training images drawn without replacement by `seed`."""
    return torch.randperm(len(ds.train_x), generator=torch.Generator().manual_seed(seed))[:count]


def real_pixels(ds: Dataset, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` training images (real_indices) as uint8 pixels, and their labels."""
    idx = real_indices(ds, count, seed)
    return ds.train_x[idx], ds.train_y[idx]


def real_subset(ds: Dataset, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` normalized training images (real_indices) and their labels."""
    idx = real_indices(ds, count, seed)
    return normalize(ds.train_x[idx], ds.mean, ds.std), ds.train_y[idx]


def test_set(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalized test images and their labels."""
    return normalize(ds.test_x, ds.mean, ds.std), ds.test_y
