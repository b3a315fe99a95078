"""Dataset sources, normalization constants, augmentation and renderings."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from natinv import data
from natinv.config import DataConfig
from natinv.errors import DataNotFound


def _npz(path: Path, layout: str, n: int = 50, test: bool = False) -> Path:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8)
    if layout == "nhwc":
        imgs = imgs.transpose(0, 2, 3, 1)
    arrays = {"images": imgs, "labels": rng.integers(0, 4, n)}
    if test:
        arrays |= {"test_images": imgs[:10], "test_labels": arrays["labels"][:10]}
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_custom_npz_either_layout(tmp_path, layout):
    cfg = DataConfig(dataset="custom", path=str(_npz(tmp_path / "d.npz", layout)), test_fraction=0.2)
    m = data.prepare(cfg, tmp_path / "out")
    ds = data.load(tmp_path / "out")
    assert (m["train_images"], m["test_images"], m["in_channels"], m["image_size"]) == (40, 10, 3, 16)
    assert ds.train_x.shape == (40, 3, 16, 16) and ds.train_x.dtype == torch.uint8
    assert ds.num_classes == 4 and len(ds.mean) == 3  # constants computed from the user's data


def test_custom_npz_with_test_split_and_errors(tmp_path):
    m = data.prepare(DataConfig(dataset="custom", path=str(_npz(tmp_path / "d.npz", "nchw", test=True))), tmp_path / "o")
    assert m["test_images"] == 10 and m["train_images"] == 50
    np.savez(tmp_path / "bad.npz", pictures=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataNotFound, match="bad.npz: missing array 'images'"):
        data.prepare(DataConfig(dataset="custom", path=str(tmp_path / "bad.npz")), tmp_path / "o2")
    with pytest.raises(DataNotFound, match="data.path = .*nothing.npz: not found"):
        data.prepare(DataConfig(dataset="custom", path=str(tmp_path / "nothing.npz")), tmp_path / "o3")


def test_image_folder(tmp_path):
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((12, 12, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / split / cls / f"{i}.png")
    m = data.prepare(DataConfig(dataset="custom", path=str(tmp_path / "imgs")), tmp_path / "out")
    assert (m["train_images"], m["test_images"], m["num_classes"], m["image_size"]) == (12, 4, 2, 12)


def _class_folder(root: Path, images: list[np.ndarray], classes: int = 4) -> Path:
    for i, a in enumerate(images):  # zero-padded names: in each class folder, ImageFolder reads them in the order written
        (root / f"c{i % classes}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / f"c{i % classes}" / f"{i:05d}.png")
    return root


@pytest.mark.parametrize("first", ["gray", "colour"])
def test_a_folder_of_gray_and_colour_images_is_colour_with_each_gray_image_in_all_three_channels(tmp_path, first):
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (8, 10, 10, 3), dtype=np.uint8)
    gray = {0, 3, 5} if first == "gray" else {1, 3, 5}
    images = [colour[i, ..., 0] if i in gray else colour[i] for i in range(8)]
    root = _class_folder(tmp_path / "imgs", images, classes=2)
    data.prepare(DataConfig(dataset="custom", path=str(root), test_fraction=0.25), tmp_path / "out")
    ds = data.load(tmp_path / "out")
    got = torch.cat([ds.train_x, ds.test_x]).numpy()
    expected = [np.repeat(a[None], 3, axis=0) if a.ndim == 2 else a.transpose(2, 0, 1) for a in images]
    assert got.shape == (8, 3, 10, 10)
    assert sorted(g.tobytes() for g in got) == sorted(e.tobytes() for e in expected)


@pytest.mark.parametrize("source", ["npz-nchw", "npz-nhwc", "folder"])
def test_custom_data_is_in_memory_once_while_it_is_prepared(tmp_path, monkeypatch, source):
    """The data stage reads a user's images into one array (an NHWC .npz: and its NCHW copy), splits them in place
    and counts the normalization from blocks of pixels: Python's allocations peak at the images (twice for NHWC) and
    a little more. The split is the same as ever: a test split drawn by seed 0 (the images of permutation(N)[:n_test]);
    the normalization is the training pixels' exact mean and std, to float64's rounding. (A float64 copy
    of the set for the constants used to make the peak 17 times the images: 13 GB at 256k 32x32 colour images.)"""
    import tracemalloc

    monkeypatch.setattr(data, "STATS_BLOCK_BYTES", 2**16)
    rng = np.random.default_rng(0)
    n = 1000 if source == "folder" else 4000
    nhwc = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(n) % 4
    def written(images: np.ndarray, labels: np.ndarray, name: str) -> Path:
        if source == "folder":
            return _class_folder(tmp_path / name, list(images))
        np.savez(tmp_path / f"{name}.npz", images=images if source == "npz-nhwc" else images.transpose(0, 3, 1, 2),
                 labels=labels)
        return tmp_path / f"{name}.npz"

    path = written(nhwc, labels, "set")
    if source == "folder":  # ImageFolder's order: by class folder, then by name
        order = np.argsort([f"c{i % 4}/{i:05d}" for i in range(n)], kind="stable")
        nhwc, labels = nhwc[order], labels[order]
    small = written(nhwc[:20], labels[:20], "small")  # a first prepare imports what the stage imports
    data.prepare(DataConfig(dataset="custom", path=str(small), test_fraction=0.1), tmp_path / "small-out")
    tracemalloc.start()
    m = data.prepare(DataConfig(dataset="custom", path=str(path), test_fraction=0.1), tmp_path / "out")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    copies = 2 if source == "npz-nhwc" else 1
    assert peak < copies * nhwc.nbytes + 2**21, (peak, nhwc.nbytes)  # and less than 2 MiB of small objects

    ds = data.load(tmp_path / "out")
    test, train = np.split(np.random.default_rng(0).permutation(n), [n // 10])
    nchw = nhwc.transpose(0, 3, 1, 2)
    assert np.array_equal(ds.test_x.numpy(), nchw[test]) and np.array_equal(ds.test_y.numpy(), labels[test])
    assert np.array_equal(ds.train_x.numpy(), nchw[train]) and np.array_equal(ds.train_y.numpy(), labels[train])
    for c in range(3):  # the exact mean and std of the training pixels / 255, from integer sums
        v = nchw[train, c].astype(np.int64)
        total, squares, count = int(v.sum()), int((v * v).sum()), v.size
        assert abs(m["mean"][c] - total / (255 * count)) < 1e-15
        assert abs(m["std"][c] - math.sqrt((squares * count - total * total) / (count * 255) ** 2)) < 1e-15


def test_fashion_mnist_found_and_padded(tmp_path):
    if data._find_fashion(tmp_path) is None:
        pytest.skip("Fashion-MNIST not installed (Debian package dataset-fashion-mnist); .ci/run installs it")
    m = data.prepare(DataConfig(root=str(tmp_path), train_limit=100, test_limit=50), tmp_path / "out")
    ds = data.load(tmp_path / "out")
    assert ds.train_x.shape == (100, 1, 32, 32) and ds.test_x.shape == (50, 1, 32, 32)
    assert ds.train_x[:, :, :2].max() == 0  # the 2-pixel pad
    assert m["mean"] == [data.NORMALIZATION["fashion-mnist"][0][0]]


def test_cifar_offline_gives_one_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvd.CIFAR10, "download", offline)
    with pytest.raises(DataNotFound, match=r"cifar10 not found under .*cifar-10-batches-py and the download failed"):
        data.prepare(DataConfig(dataset="cifar10", root=str(tmp_path)), tmp_path / "out")


def test_crop_flip_and_renderings():
    x = torch.randn(64, 3, 32, 32)
    out = data.crop_flip(x, pad=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    same = data.crop_flip(x, pad=0, generator=torch.Generator().manual_seed(0))
    flipped = x.flip(3)
    assert all(torch.equal(s, a) or torch.equal(s, f) for s, a, f in zip(same, x, flipped))
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    u8 = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(data.render_uint8(data.normalize(u8, mean, std), mean, std), u8)  # round trip
    big = torch.randn(4, 3, 8, 8) * 10
    mm = data.render_uint8(big, mean, std, "minmax")
    assert mm.amin(dim=(1, 2, 3)).eq(0).all() and mm.amax(dim=(1, 2, 3)).eq(255).all()


@pytest.mark.parametrize("dataset, shape, classes", [("cifar10", (3, 32, 32), 10), ("cifar100", (3, 32, 32), 100),
                                                     ("fashion-mnist", (1, 32, 32), 10)])
def test_standin_has_the_datasets_shape_and_classes_and_is_the_same_every_time(tmp_path, dataset, shape, classes):
    cfg = DataConfig(dataset=dataset, standin=True, train_limit=300, test_limit=120, root=str(tmp_path / "nothing"))
    m = data.prepare(cfg, tmp_path / "a")
    ds = data.load(tmp_path / "a")
    assert ds.train_x.shape == (300, *shape) and ds.test_x.shape == (120, *shape) and ds.num_classes == classes
    assert m["standin"] and "not real images" in m["source"] and (ds.mean, ds.std) == data.NORMALIZATION[dataset]
    counts = torch.bincount(ds.train_y, minlength=classes)
    assert counts.max() - counts.min() <= 1  # balanced
    data.prepare(cfg, tmp_path / "b")
    assert (tmp_path / "a/train.npz").read_bytes() == (tmp_path / "b/train.npz").read_bytes()
    # a class is a pattern: images of one class are closer to each other than to another class's
    x = ds.train_x.float()
    same = (x[ds.train_y == 0][0] - x[ds.train_y == 0][1]).abs().mean()
    other = (x[ds.train_y == 0][0] - x[ds.train_y == 1][0]).abs().mean()
    assert same < other


def test_standin_of_custom_data_is_refused(tmp_path):
    from natinv.config import load_config
    from natinv.errors import ConfigError

    p = tmp_path / "p.yaml"
    p.write_text("data: {dataset: custom, standin: true}\n")
    with pytest.raises(ConfigError, match="data.standin: a stand-in imitates fashion-mnist, cifar10 or cifar100"):
        load_config([Path(__file__).resolve().parents[1] / "params/default.yaml", p])


def test_atomic_writes_never_write_nan_and_stale_temporaries_are_removed(tmp_path):
    import math

    from natinv.errors import NatinvError
    from natinv.io import atomic_write_json, check_writable, remove_stale_temps

    with pytest.raises(NatinvError, match=r"r.json: not written, a value is NaN or infinite \(a.b, c.1\)"):
        atomic_write_json(tmp_path / "r.json", {"a": {"b": math.nan}, "c": [1.0, math.inf], "d": 2})
    assert list(tmp_path.iterdir()) == []
    (tmp_path / ".r.json.natinv-x1x1x1x1.tmp").write_text("half")  # left by a process killed inside the write window
    (tmp_path / ".other.json.natinv-x2x2x2x2.tmp").write_text("someone else's")
    (tmp_path / ".r.json.notes.tmp").write_text("the user's own")  # ends in .tmp, but no name natinv makes
    assert remove_stale_temps(tmp_path / "r.json") == [tmp_path / ".r.json.natinv-x1x1x1x1.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.natinv-x2x2x2x2.tmp", ".r.json.notes.tmp"]
    (tmp_path / "file").write_text("")
    for bad in (tmp_path / "file" / "r.json", tmp_path / "file" / "deeper" / "r.json"):
        with pytest.raises(NatinvError, match="is a file, not a folder"):
            check_writable(bad)
    check_writable(tmp_path / "new" / "deeper" / "r.json")  # creatable: fine, and nothing created
    assert not (tmp_path / "new").exists()


def test_a_methods_images_are_in_memory_once_while_its_shards_are_read(tmp_path):
    """read_shards reads each shard's member from its file into its place in the one result array: the arrays equal
    the stored ones, in shard order, and while they are read Python's allocations peak at the result (a one-shard
    method's images, as ADI's and DAFL's are, used to be read whole and then copied: twice their size)."""
    import tracemalloc

    from natinv import paths
    from natinv.io import read_npz, write_npz

    rng = np.random.default_rng(0)
    for method, sizes in [("one", [4000]), ("many", [1500, 1000, 1500])]:
        stored = [rng.standard_normal((n, 3, 8, 8)).astype(np.float16) for n in sizes]
        for shard, images in enumerate(stored):
            path = paths.shard_npz(tmp_path, "t", method, shard)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_npz(path, {"images": images, "labels": np.arange(len(images)) % 10})
            read_npz(path)  # verified once, as a stage's first read does (the check streams its blocks)
        tracemalloc.start()
        got = paths.read_shards(tmp_path, "t", method, len(sizes), ("images", "labels"))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert np.array_equal(got["images"], np.concatenate(stored)), method
        assert np.array_equal(got["labels"], np.concatenate([np.arange(n) % 10 for n in sizes])), method
        result = got["images"].nbytes + got["labels"].nbytes
        assert peak < result + 2**20, (method, peak, result)  # the result and a few small objects


def test_rows_of_an_npz_member_are_read_alone_and_equal_the_whole_members_rows(tmp_path):
    """read_rows memory-maps a stored member (write_npz's) and reads only the rows asked for; the rows equal those of
    the whole array, in the order asked."""
    from natinv.io import Chunked, read_npz, read_rows, write_npz

    rng = np.random.default_rng(0)
    images = rng.standard_normal((50, 3, 4, 4)).astype(np.float16)
    arrays = {"images": images, "labels": np.arange(50), "u8": Chunked((50, 2), np.dtype(np.uint8),
                                                                        lambda: iter([np.full((50, 2), 7, np.uint8)]))}
    stored = tmp_path / "stored.npz"
    write_npz(stored, arrays)
    rows = np.array([49, 0, 7, 7, 23])
    got = read_rows(stored, "images", rows)
    assert got.dtype == np.float16 and np.array_equal(got, read_npz(stored, ("images",))["images"][rows])
    assert np.array_equal(read_rows(stored, "labels", rows), rows) and (read_rows(stored, "u8", rows) == 7).all()
    named = tmp_path / "named.npz"  # array names that sort differently as file names ("a-b.npy" < "a.npy")
    write_npz(named, {"a": np.zeros(2), "a-b": np.ones(2), "a_c": np.arange(2)})
    assert set(read_npz(named)) == {"a", "a-b", "a_c"}
