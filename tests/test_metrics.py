"""Fréchet distance and k-NN precision/recall behave as metrics should on known feature sets."""
import numpy as np
import pytest
import torch
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from conftest import tiny_teacher
from natinv.errors import ConfigError
from natinv.metrics import (INCEPTION, embeddings, extractor_name, fidelity_metrics, frechet_distance, inception_weights,
                            layer_features, precision_recall, tsne_2d)


def gaussian(n: int, d: int = 8, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def test_frechet_distance_is_zero_on_itself_and_grows_with_a_shift():
    a = gaussian(2000)
    assert abs(frechet_distance(a, a)) < 1e-6
    same = frechet_distance(a, gaussian(2000, seed=1))  # an independent sample of the same distribution: noise only
    near, far = frechet_distance(a, gaussian(2000, shift=0.5, seed=1)), frechet_distance(a, gaussian(2000, shift=2.0, seed=1))
    # a mean shift of s in all d = 8 dimensions adds d * s^2
    assert same < 0.5 and abs(near - 8 * 0.25) < 0.15 * 8 * 0.25 and abs(far - 8 * 4.0) < 0.05 * 8 * 4.0


def test_precision_recall_of_a_set_with_itself_is_one_and_drops_off_manifold():
    a = gaussian(500)
    same = precision_recall(a, a)
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    off = precision_recall(gaussian(500, shift=6.0, seed=1), a)
    assert off["precision"] < 0.05 and off["recall"] < 0.05


def test_embeddings_are_batched_penultimate_features():
    model = tiny_teacher(width=4)
    x = torch.randn(300, 3, 32, 32)  # three CPU inference batches, the last one ragged
    feats = embeddings(model, x, torch.device("cpu"))
    with torch.no_grad():
        assert torch.allclose(feats, model.eval().embed(x).double(), atol=1e-5)
    assert feats.shape == (300, 16) and feats.dtype == torch.float64


class TinyExtractor(FeatureExtractorBase):
    """A fixed random conv net standing in for Inception-v3 (offline, milliseconds): exercises the torch-fidelity path."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        emb = self.body(x.float() / 255)
        feats = {"emb": emb, "logits": self.head(emb)}
        return tuple(feats[n] for n in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return "emb", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "emb", "kid": "emb", "prc": "emb"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return None


def blobs(n: int, brightness: float = 0.0, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """uint8 images: a random bright square on a dark background."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, 32, 32, generator=g) * 40 + brightness
    for i, (r, c) in enumerate(torch.randint(0, 20, (n, 2), generator=g).tolist()):
        x[i, :, r:r + 12, c:c + 12] += 150
    return x.clamp(0, 255).to(torch.uint8)


def test_a_registered_extractor_gives_is_fid_and_pr_offline_and_caches_the_real_side(tmp_path):
    name = extractor_name("test_metrics:TinyExtractor")  # registered on first use, found on the second
    assert extractor_name("test_metrics:TinyExtractor") == name
    real = blobs(300)
    same = fidelity_metrics(real, real, name, None, torch.device("cpu"), cache_root=tmp_path, real_name="blobs")
    assert abs(same["fid"]) < 1e-3 and same["precision"] == 1.0 and same["recall"] == 1.0 and same["is"] > 1.0
    assert len(list(tmp_path.glob("blobs-*-none.safetensors"))) == 1  # the real side's features, cached
    shifted = fidelity_metrics(blobs(300, brightness=60, seed=1), real, name, None, torch.device("cpu"),
                               cache_root=tmp_path, real_name="blobs")
    fresh = fidelity_metrics(blobs(300, seed=1), real, name, None, torch.device("cpu"), cache_root=tmp_path, real_name="blobs")
    assert fresh["fid"] < shifted["fid"] and shifted["precision"] < fresh["precision"]


def test_missing_inception_weights_are_reported_not_faked(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights, why = inception_weights(INCEPTION, None)
    assert weights is None and "no Inception-v3 weights" in why and str(tmp_path) in why
    (tmp_path / "checkpoints").mkdir()
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    (tmp_path / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[1]).write_bytes(b"x")
    assert inception_weights(INCEPTION, None) == (str(tmp_path / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[1]), None)
    with pytest.raises(ConfigError, match="metrics.inception.weights = '/nowhere.pth': file not found"):
        inception_weights(INCEPTION, "/nowhere.pth")
    with pytest.raises(ConfigError, match="metrics.inception.feature_extractor = 'no_such_module:X'"):
        extractor_name("no_such_module:X")


def test_layer_features_pool_each_stage_and_match_the_embedding():
    model = tiny_teacher(width=4)
    x = torch.randn(150, 3, 32, 32)
    feats = layer_features(model, x, torch.device("cpu"), ["stage1", "stage3", "embedding"])  # two CPU inference batches
    assert feats["stage1"].shape == (150, 4 * 16) and feats["stage3"].shape == (150, 16 * 16)
    with torch.no_grad():
        assert np.allclose(feats["embedding"], model.embed(x).numpy(), atol=1e-5)
    coords = tsne_2d(np.concatenate([feats["stage1"][:23], feats["stage1"][:23] + 50]), seed=2**40)  # two far-apart copies
    assert coords.shape == (46, 2)
    a, b = coords[:23].mean(0), coords[23:].mean(0)
    assert np.linalg.norm(a - b) > 3 * coords[:23].std(0).max()  # t-SNE keeps them apart


def test_precision_recall_in_small_blocks_equals_torch_fidelitys():
    """The blocked k-NN precision/recall (bounded memory for any set size) gives torch-fidelity's numbers."""
    from torch_fidelity import metric_prc as prc

    gen, real = gaussian(300, shift=0.7, seed=2), gaussian(200, seed=3)
    ref = prc.prc_features_to_metric(gen, real, prc_neighborhood=3, prc_batch_size=10000, save_cpu_ram=True, verbose=False)
    for block in (7, 1000, 10**9):  # rows of one distance each, a few rows, everything at once
        ours = precision_recall(gen, real, 3, block=block)
        assert ours["precision"] == pytest.approx(ref[prc.KEY_METRIC_PRECISION], abs=1e-6)  # the same counts (theirs: a float32 mean)
        assert ours["recall"] == pytest.approx(ref[prc.KEY_METRIC_RECALL], abs=1e-6)  # the same counts (theirs: a float32 mean)
        assert ours["f_score"] == pytest.approx(ref[prc.KEY_METRIC_F_SCORE], abs=1e-6)  # the same counts (theirs: a float32 mean)
    assert 0 < ours["precision"] < 1 and 0 < ours["recall"] < 1
