"""Custom data (`data.dataset: custom`, `data.path`): an .npz of uint8 images and integer labels, or an image folder
(one sub-folder per class, optionally train/ and test/), read and checked at the door. Every image mode Pillow
opens becomes uint8 gray or RGB; what has no such reading, and what is no regular file, is one line."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from natinv.config import DataConfig
from natinv.errors import DataNotFound


def _to_nchw(images: np.ndarray, where: str) -> np.ndarray:
    if images.dtype != np.uint8:
        raise DataNotFound(f"{where}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        return images[:, None]
    if images.ndim != 4:
        raise DataNotFound(f"{where}: images must be (N, H, W), NHWC or NCHW, got shape {images.shape}")
    if images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        return images
    if images.shape[-1] in (1, 3):
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    raise DataNotFound(f"{where}: cannot tell the channel axis of shape {images.shape} (expected 1 or 3 channels)")


def _labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Class labels as int64 (N,): integers only (a float label is a regression target or a mistake, never rounded)."""
    if labels.dtype.kind not in "iu":
        raise DataNotFound(f"{where}: labels must be integers (class indices 0..K-1), got {labels.dtype}")
    if labels.ndim != 1 and not (labels.ndim == 2 and labels.shape[1] == 1):
        raise DataNotFound(f"{where}: labels must be one class index per image (N,), got shape {labels.shape}")
    return labels.astype(np.int64).ravel()


def _split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple:
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(len(x) * fraction)))
    te, tr = order[:n_test], order[n_test:]
    return x[tr], y[tr], x[te], y[te]


def _load_npz(path: Path, cfg: DataConfig) -> tuple:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise DataNotFound(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    for key in ("images", "labels"):
        if key not in arrays:
            raise DataNotFound(f"{path}: missing array {key!r}; found {', '.join(arrays) or 'none'} (need images uint8 NHWC/NCHW and labels)")
    x, y = _to_nchw(arrays["images"], f"{path}:images"), _labels(arrays["labels"], f"{path}:labels")
    if len(x) != len(y):
        raise DataNotFound(f"{path}: {len(x)} images but {len(y)} labels")
    if "test_images" in arrays and "test_labels" in arrays:
        xt, yt = _to_nchw(arrays["test_images"], f"{path}:test_images"), _labels(arrays["test_labels"], f"{path}:test_labels")
        if len(xt) != len(yt):
            raise DataNotFound(f"{path}: {len(xt)} test_images but {len(yt)} test_labels")
    else:
        x, y, xt, yt = _split(x, y, cfg.test_fraction, 0)
    return x, y, xt, yt


SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # 16-bit gray as Pillow opens it ("I": 32-bit integers)


def pixels(img, path: str) -> np.ndarray:
    """An image's pixels as uint8, (H, W) gray or (H, W, 3) colour: 8-bit modes converted as Pillow does (alpha
    dropped, palette and CMYK/YCbCr/LAB/HSV to RGB), 16-bit gray scaled to 8 bits (not clipped), and one line for
    what has no 8-bit meaning (floating-point pixels, integers beyond 16 bits)."""
    mode = img.mode
    if mode in SIXTEEN_BIT:
        a = np.asarray(img).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise DataNotFound(f"{path}: {mode} pixels range {a.min()}..{a.max()}; expected 16-bit values 0..65535")
        return ((a * 255 + 32767) // 65535).astype(np.uint8)
    if mode == "F":
        raise DataNotFound(f"{path}: floating-point pixels (mode F), whose range is unknown; expected 8- or 16-bit images")
    gray = mode in ("1", "L", "LA", "La")
    try:
        return np.asarray(img.convert("L" if gray else "RGB"))
    except (ValueError, OSError) as exc:
        raise DataNotFound(f"{path}: image mode {mode} cannot be read as 8-bit gray or RGB ({exc})") from None


def _load_folder(path: Path, cfg: DataConfig) -> tuple:
    from PIL import Image
    from torchvision.datasets import ImageFolder

    def read(folder: Path, classes: list[str] | None = None):
        try:
            ds = ImageFolder(str(folder))
        except (FileNotFoundError, RuntimeError) as exc:  # no class folders, or class folders without images
            raise DataNotFound(f"{folder}: not an image folder ({str(exc).splitlines()[0]}); expected one sub-folder of images per class") from None
        if classes is not None and ds.classes != classes:
            raise DataNotFound(f"{folder}: class folders {ds.classes} differ from the training classes {classes}")
        imgs, labels = [], []
        if not ds.samples:
            raise DataNotFound(f"{folder}: no images in its class folders")
        seen: dict[str, str] = {}
        for p, label in ds.samples:
            if not stat.S_ISREG(os.stat(p).st_mode):  # opening a FIFO would wait for a writer forever
                raise DataNotFound(f"{p}: not a regular file (a FIFO, socket or device); expected an image file")
            if (real := os.path.realpath(p)) in seen:
                raise DataNotFound(f"{p}: the same file as {seen[real]} (a symbolic link loop or a folder linked twice); "
                                   f"every image must be reached once")
            seen[real] = p
            try:
                with Image.open(p) as opened:
                    opened.load()
                    img = opened.copy()
            except Exception as exc:  # PIL raises several types for a truncated or foreign file
                raise DataNotFound(f"{p}: unreadable image ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
            if cfg.image_size:
                img = img.resize((cfg.image_size, cfg.image_size))
            imgs.append(pixels(img, p))
            labels.append(label)
        shapes = {a.shape[:2] for a in imgs}
        if len(shapes) != 1:
            raise DataNotFound(f"{folder}: images have different sizes {sorted(shapes)[:3]}; set data.image_size to resize them")
        if len({a.ndim for a in imgs}) > 1:  # gray and colour images in one set: the gray ones as colour
            imgs = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in imgs]
        return _to_nchw(np.stack(imgs), str(folder)), np.asarray(labels, dtype=np.int64), ds.classes

    if (path / "train").is_dir():
        x, y, classes = read(path / "train")
        if (path / "test").is_dir():
            xt, yt, _ = read(path / "test", classes)
            return x, y, xt, yt
    else:
        x, y, _ = read(path)
    return _split(x, y, cfg.test_fraction, 0)


def folder_classes(path: Path) -> list[str]:
    """An image folder's class names in label order (its class folders, sorted, as torchvision's ImageFolder)."""
    root = path / "train" if (path / "train").is_dir() else path
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())


def load_custom(cfg: DataConfig) -> tuple:
    """(train images, labels, test images, labels, classes, source) of data.path: an .npz or an image folder."""
    path = Path(cfg.path)
    if path.is_symlink() and not path.exists():
        raise DataNotFound(f"data.path = {cfg.path}: a symbolic link that leads nowhere or loops (expected an image "
                           f"folder or an .npz file)")
    if not path.exists():
        raise DataNotFound(f"data.path = {cfg.path}: not found (expected an image folder or an .npz file)")
    if not path.is_dir() and not path.is_file():  # a FIFO, socket or device: reading it could wait forever
        raise DataNotFound(f"data.path = {cfg.path}: not a regular file or folder (a FIFO, socket or device); expected "
                           f"an image folder or an .npz file")
    x, y, xt, yt = _load_npz(path, cfg) if path.suffix == ".npz" else _load_folder(path, cfg)
    if x.shape[-1] != x.shape[-2]:
        raise DataNotFound(f"{path}: images must be square, got {x.shape[-2]}x{x.shape[-1]}; set data.image_size")
    num_classes = int(y.max()) + 1 if len(y) else 0
    return x, y, xt, yt, num_classes, str(path)
