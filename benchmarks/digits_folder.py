"""scikit-learn's bundled handwritten digits (1,797 gray 8x8 images, 10 classes; no download) as an image folder, the
way a user brings their own data: `train/<class>/<n>.png` and `test/<class>/<n>.png`.

    .venv/bin/python benchmarks/digits_folder.py data/digits   # then params/claims-digits.yaml reads it

The 17 gray levels (0..16) become 0..255; the test split is a fixed, stratified fifth of each class (seed 0), so
every run of every setting sees the same test images. Writes nothing when the folder already holds the same split.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

TEST_FRACTION = 0.2


def split(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A boolean mask of the test images: the same fraction of every class."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test[idx[:round(len(idx) * TEST_FRACTION)]] = True
    return test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    args = ap.parse_args()
    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)
    test = split(digits.target)
    written = 0
    for n, (img, label, is_test) in enumerate(zip(pixels, digits.target, test)):
        path = args.folder / ("test" if is_test else "train") / str(label) / f"{n:04d}.png"
        if path.is_file() and np.array_equal(np.asarray(Image.open(path)), img):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        Image.fromarray(img, mode="L").save(tmp, format="PNG")
        tmp.replace(path)
        written += 1
    print(f"{args.folder}: {int((~test).sum())} train and {int(test.sum())} test images of 10 classes "
          f"({written} written)")


if __name__ == "__main__":
    sys.exit(main())
