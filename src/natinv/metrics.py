"""How real the images are (paper Tables 1, 8): Fréchet distance and k-NN precision/recall on embeddings.

The math is torch-fidelity's (`fid_features_to_statistics`, `fid_statistics_to_metric`, `prc_features_to_metric`);
this module only produces the embeddings, batched, from any network with `embed` (the teacher's penultimate
features, or an independent evaluator's).
"""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def embeddings(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """Penultimate features of `x` (normalized images, NCHW, any float dtype) as float64 on the CPU, in batches."""
    was_training = model.training
    model.eval().to(device)
    out = [model.embed(xb.to(device).float()).double().cpu() for xb in x.split(batch_size)]
    model.train(was_training)
    return torch.cat(out)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FD between Gaussians fitted to two feature sets (N, D); FID when the features are Inception's."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    stats = [fid_features_to_statistics(f.double().cpu()) for f in (a, b)]
    return float(fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID])


def precision_recall(generated: torch.Tensor, real: torch.Tensor, k: int = 3) -> dict[str, float]:
    """k-NN precision (generated samples inside the real manifold) and recall (real samples inside the generated one)."""
    from torch_fidelity import metric_prc as prc

    out = prc.prc_features_to_metric(generated.float().cpu(), real.float().cpu(), prc_neighborhood=k, prc_batch_size=10000,
                                     save_cpu_ram=True, verbose=False)
    return {"precision": float(out[prc.KEY_METRIC_PRECISION]), "recall": float(out[prc.KEY_METRIC_RECALL]),
            "f_score": float(out[prc.KEY_METRIC_F_SCORE])}
