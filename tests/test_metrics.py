"""Fréchet distance and k-NN precision/recall behave as metrics should on known feature sets."""
import torch

from conftest import tiny_teacher
from natinv.metrics import embeddings, frechet_distance, precision_recall


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
    x = torch.randn(37, 3, 32, 32)
    feats = embeddings(model, x, torch.device("cpu"), batch_size=10)
    with torch.no_grad():
        assert torch.allclose(feats, model.eval().embed(x).double(), atol=1e-5)
    assert feats.shape == (37, 16) and feats.dtype == torch.float64
