import pytest
import torch

from natinv.synthesis.labels import batch_labels


@pytest.mark.parametrize("batch,classes", [(128, 10), (256, 100), (64, 100), (7, 3), (10, 10), (1, 5)])
def test_balanced_for_any_class_count(batch, classes):
    y = batch_labels(batch, classes, torch.Generator().manual_seed(0))
    assert y.shape == (batch,) and y.dtype == torch.int64
    assert int(y.min()) >= 0 and int(y.max()) < classes
    counts = torch.bincount(y, minlength=classes)
    assert int(counts.max()) - int(counts.min()) <= 1
    assert int((counts == batch // classes + 1).sum()) == batch % classes  # remainder: distinct classes


def test_remainder_depends_on_seed_only():
    a = batch_labels(64, 100, torch.Generator().manual_seed(1))
    b = batch_labels(64, 100, torch.Generator().manual_seed(1))
    c = batch_labels(64, 100, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
