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


def _layout(shape: tuple[int, ...], where: str) -> str:
    """Where images of `shape` hold their channels: "gray" (N, H, W), "nchw" or "nhwc"."""
    if len(shape) == 3:
        return "gray"
    if len(shape) != 4:
        raise DataNotFound(f"{where}: images must be (N, H, W), NHWC or NCHW, got shape {shape}")
    if shape[1] in (1, 3) and shape[-1] not in (1, 3):
        return "nchw"
    if shape[-1] in (1, 3):
        return "nhwc"
    raise DataNotFound(f"{where}: cannot tell the channel axis of shape {shape} (expected 1 or 3 channels)")


def _nchw_shape(shape: tuple[int, ...], where: str) -> tuple[int, int, int, int]:
    layout = _layout(shape, where)
    n, *rest = shape
    c, h, w = (1, *rest) if layout == "gray" else rest if layout == "nchw" else (rest[2], rest[0], rest[1])
    return n, c, h, w


def _to_nchw(images: np.ndarray, where: str) -> np.ndarray:
    if images.dtype != np.uint8:
        raise DataNotFound(f"{where}: images must be uint8, got {images.dtype}")
    layout = _layout(images.shape, where)
    if layout == "gray":
        return images[:, None]
    return images if layout == "nchw" else np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def _labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Class labels as int64 (N,): integers only (a float label is a regression target or a mistake, never rounded)."""
    if labels.dtype.kind not in "iu":
        raise DataNotFound(f"{where}: labels must be integers (class indices 0..K-1), got {labels.dtype}")
    if labels.ndim != 1 and not (labels.ndim == 2 and labels.shape[1] == 1):
        raise DataNotFound(f"{where}: labels must be one class index per image (N,), got shape {labels.shape}")
    return labels.astype(np.int64).ravel()


def _count_split(n: int, fraction: float) -> tuple[int, int]:
    """(train, test) images of `n` split by `fraction` (a test split of at least one)."""
    n_test = max(1, int(round(n * fraction)))
    return n - n_test, n_test


def _permute_rows(x: np.ndarray, order: list[int]) -> None:
    """x[k] = x[order[k]] for every k, in place: each cycle of the permutation in turn, one row held aside (a split of
    a large set is not a copy of it)."""
    done = bytearray(len(order))
    for start in range(len(order)):
        if done[start]:
            continue
        held, j = x[start].copy(), start
        while True:
            done[j] = 1
            k = order[j]
            if k == start:
                x[j] = held
                break
            x[j] = x[k]
            j = k


def _split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple:
    """(train images, labels, test images, labels): a random test split of `fraction`, drawn by `seed`. `x` is
    reordered in place and both splits are views of it."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = _count_split(len(x), fraction)[1]
    _permute_rows(x, order.tolist())
    y = y[order]
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def _load_npz(path: Path, cfg: DataConfig) -> tuple:
    """The arrays of a user's .npz, each read and made NCHW in turn (its other members are not read)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names = z.files
            for key in ("images", "labels"):
                if key not in names:
                    raise DataNotFound(f"{path}: missing array {key!r}; found {', '.join(names) or 'none'} (need images "
                                       f"uint8 NHWC/NCHW and labels)")
            x, y = _to_nchw(z["images"], f"{path}:images"), _labels(z["labels"], f"{path}:labels")
            tested = "test_images" in names and "test_labels" in names
            if tested:
                xt, yt = _to_nchw(z["test_images"], f"{path}:test_images"), _labels(z["test_labels"], f"{path}:test_labels")
    except DataNotFound:
        raise
    except Exception as exc:
        raise DataNotFound(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    if len(x) != len(y):
        raise DataNotFound(f"{path}: {len(x)} images but {len(y)} labels")
    if not tested:
        return _split(x, y, cfg.test_fraction, 0)
    if len(xt) != len(yt):
        raise DataNotFound(f"{path}: {len(xt)} test_images but {len(yt)} test_labels")
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


def _image(p: str, cfg: DataConfig) -> np.ndarray:
    """One image file's pixels (`pixels`), resized to data.image_size when it is set."""
    from PIL import Image

    try:
        with Image.open(p) as opened:
            opened.load()
            img = opened.copy()
    except Exception as exc:  # PIL raises several types for a truncated or foreign file
        raise DataNotFound(f"{p}: unreadable image ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if cfg.image_size:
        img = img.resize((cfg.image_size, cfg.image_size))
    return pixels(img, p)


def _read_images(files: list[str], cfg: DataConfig, folder: Path) -> np.ndarray:
    """The images of `files` as one uint8 NCHW array, each written into its place as it is read: gray when every
    image is gray, else colour (a gray image's one channel in all three)."""
    out, sizes = None, set()
    for i, p in enumerate(files):
        a = _image(p, cfg)
        sizes.add(a.shape[:2])
        if len(sizes) > 1:  # every size is read before the error names them
            continue
        if out is None:
            out = np.empty((len(files), 3 if a.ndim == 3 else 1, *a.shape[:2]), np.uint8)
        elif a.ndim == 3 and out.shape[1] == 1:  # the first colour image after gray ones: the set becomes colour
            out = np.repeat(out, 3, axis=1)
        out[i] = a.transpose(2, 0, 1) if a.ndim == 3 else a
    if len(sizes) != 1:
        raise DataNotFound(f"{folder}: images have different sizes {sorted(sizes)[:3]}; set data.image_size to resize them")
    return out


def _load_folder(path: Path, cfg: DataConfig) -> tuple:
    from torchvision.datasets import ImageFolder

    def read(folder: Path, classes: list[str] | None = None):
        try:
            ds = ImageFolder(str(folder))
        except (FileNotFoundError, RuntimeError) as exc:  # no class folders, or class folders without images
            raise DataNotFound(f"{folder}: not an image folder ({str(exc).splitlines()[0]}); expected one sub-folder of images per class") from None
        if classes is not None and ds.classes != classes:
            raise DataNotFound(f"{folder}: class folders {ds.classes} differ from the training classes {classes}")
        if not ds.samples:
            raise DataNotFound(f"{folder}: no images in its class folders")
        seen: dict[str, str] = {}
        for p, _ in ds.samples:
            if not stat.S_ISREG(os.stat(p).st_mode):  # opening a FIFO would wait for a writer forever
                raise DataNotFound(f"{p}: not a regular file (a FIFO, socket or device); expected an image file")
            if (real := os.path.realpath(p)) in seen:
                raise DataNotFound(f"{p}: the same file as {seen[real]} (a symbolic link loop or a folder linked twice); "
                                   f"every image must be reached once")
            seen[real] = p
        x = _read_images([p for p, _ in ds.samples], cfg, folder)
        return x, np.asarray([label for _, label in ds.samples], dtype=np.int64), ds.classes

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


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The shape of each array in an .npz, from the arrays' headers (nothing else is read)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            shapes = {}
            for name in z.namelist():
                if name.endswith(".npy"):
                    with z.open(name) as f:
                        version = np.lib.format.read_magic(f)
                        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                        shapes[name[:-4]] = header(f)[0]
    except Exception as exc:
        raise DataNotFound(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    return shapes


def _describe_npz(path: Path, cfg: DataConfig) -> tuple[int, int, int, int, int]:
    shapes = _npz_shapes(path)
    if "images" not in shapes or "labels" not in shapes:
        raise DataNotFound(f"{path}: missing array images or labels")
    n, c, _, size = _nchw_shape(shapes["images"], f"{path}:images")
    with np.load(path, allow_pickle=False) as z:
        labels = z["labels"]
    classes = int(labels.max()) + 1 if labels.size else 0
    if "test_images" in shapes and "test_labels" in shapes:
        return c, size, classes, n, shapes["test_images"][0]
    return c, size, classes, *_count_split(n, cfg.test_fraction)


def _image_files(folder: Path) -> list[str]:
    """The image files of an image folder's class folders, as torchvision's ImageFolder finds them."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return [os.path.join(root, f) for entry in os.scandir(folder) if entry.is_dir()
            for root, _, files in os.walk(entry.path, followlinks=True) for f in files if f.lower().endswith(IMG_EXTENSIONS)]


def _describe_folder(path: Path, cfg: DataConfig) -> tuple[int, int, int, int, int]:
    from PIL import Image

    root = path / "train" if (path / "train").is_dir() else path
    files = _image_files(root)
    if not files:
        raise DataNotFound(f"{root}: no images in its class folders")
    with Image.open(min(files)) as first:  # the header only: its size and mode stand for the set's
        size = cfg.image_size or first.size[0]
        c = 1 if first.mode in ("1", "L", "LA", "La", *SIXTEEN_BIT) else 3
    classes = len(folder_classes(path))
    if root != path and (path / "test").is_dir():
        return c, size, classes, len(files), len(_image_files(path / "test"))
    return c, size, classes, *_count_split(len(files), cfg.test_fraction)


def _data_path(cfg: DataConfig) -> Path:
    """data.path, once it is an existing regular file or folder (anything else is one line)."""
    path = Path(cfg.path)
    if path.is_symlink() and not path.exists():
        raise DataNotFound(f"data.path = {cfg.path}: a symbolic link that leads nowhere or loops (expected an image "
                           f"folder or an .npz file)")
    if not path.exists():
        raise DataNotFound(f"data.path = {cfg.path}: not found (expected an image folder or an .npz file)")
    if not path.is_dir() and not path.is_file():  # a FIFO, socket or device: reading it could wait forever
        raise DataNotFound(f"data.path = {cfg.path}: not a regular file or folder (a FIFO, socket or device); expected "
                           f"an image folder or an .npz file")
    return path


def describe(cfg: DataConfig) -> tuple[int, int, int, int, int]:
    """(channels, image size, classes, train images, test images) of data.path before the data stage reads it: from
    an .npz's array headers and labels, or an image folder's file count and first image (its header). Limits are
    not applied; the data stage's manifest has the exact figures once it has run."""
    path = _data_path(cfg)
    return _describe_npz(path, cfg) if path.suffix == ".npz" else _describe_folder(path, cfg)


def load_custom(cfg: DataConfig) -> tuple:
    """(train images, labels, test images, labels, classes, source) of data.path: an .npz or an image folder."""
    path = _data_path(cfg)
    x, y, xt, yt = _load_npz(path, cfg) if path.suffix == ".npz" else _load_folder(path, cfg)
    if x.shape[-1] != x.shape[-2]:
        raise DataNotFound(f"{path}: images must be square, got {x.shape[-2]}x{x.shape[-1]}; set data.image_size")
    num_classes = int(y.max()) + 1 if len(y) else 0
    return x, y, xt, yt, num_classes, str(path)
