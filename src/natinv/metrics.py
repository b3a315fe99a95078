"""How real the images are (paper Tables 1, 8): Fréchet distance and k-NN precision/recall on embeddings.

The math is torch-fidelity's (`fid_features_to_statistics`, `fid_statistics_to_metric`, `prc_features_to_metric`);
this module only produces the embeddings, batched, from any network with `embed` (the teacher's penultimate
features, or an independent evaluator's). The Inception metrics of the paper's Table 1 (IS, FID, P&R) are one
torch-fidelity call on uint8 images when Inception-v3 weights are at hand (or any other registered extractor).
"""
from __future__ import annotations

import hashlib
import importlib
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from natinv.errors import ConfigError
from natinv.train import inference_batch


@torch.no_grad()
def embeddings(model: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Penultimate features of `x` (normalized images, NCHW, any float dtype) as float64 on the CPU, in batches."""
    was_training = model.training
    model.eval().to(device)
    out = [model.embed(xb.to(device).float()).double().cpu() for xb in x.split(inference_batch(device))]
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


# ------------------------------------------------------------------ Inception-v3 (or any torch-fidelity extractor)

INCEPTION = "inception-v3-compat"


class Uint8Images(Dataset):
    """Images as torch-fidelity reads them: uint8 (3, H, W); one-channel images are repeated to RGB."""

    def __init__(self, x: torch.Tensor):
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 images (N, 1|3, H, W), got {tuple(x.shape)} {x.dtype}")
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i].expand(3, -1, -1).contiguous()


def extractor_name(spec: str) -> str:
    """A torch-fidelity feature extractor by registered name, or 'module:Class' (a FeatureExtractorBase subclass),
    imported and registered on first use."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if spec in FEATURE_EXTRACTORS_REGISTRY:
        return spec
    name = re.sub(r"[^\w.-]", ".", spec)
    if name in FEATURE_EXTRACTORS_REGISTRY:
        return name
    module, _, cls = spec.partition(":")
    try:
        register_feature_extractor(name, getattr(importlib.import_module(module), cls))
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"metrics.inception.feature_extractor = {spec!r}: {exc}; expected one of "
                          f"{', '.join(sorted(FEATURE_EXTRACTORS_REGISTRY))} or 'module:Class'") from None
    return name


def inception_weights(spec: str, weights: str | None) -> tuple[str | None, str | None]:
    """(weights file to load, None) when the extractor can run without a download, else (None, why not).
    Inception-v3: the configured file, or torch-fidelity's copy in the torch hub cache; others: as configured."""
    if weights is not None:
        if not Path(weights).is_file():
            raise ConfigError(f"metrics.inception.weights = {weights!r}: file not found; expected a weights file for "
                              f"{spec} or null (use the library's cache)")
        return weights, None
    if spec != INCEPTION:
        return None, None
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(URL_INCEPTION_V3).name
    if cached.is_file():
        return str(cached), None
    return None, (f"no Inception-v3 weights: metrics.inception.weights is null and {cached} does not exist "
                  f"(download {URL_INCEPTION_V3} there, or set the key to a local copy)")


def file_digest(path: str | None) -> str:
    if path is None:
        return "none"
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def fidelity_metrics(generated: torch.Tensor, real: torch.Tensor, extractor: str, weights: str | None,
                     device: torch.device, *, k: int = 3, batch_size: int = 64, cache_root: Path | None = None,
                     real_name: str | None = None) -> dict[str, float]:
    """IS of `generated`, and FID and k-NN precision/recall against `real` (uint8 images), all from one feature
    extractor in one torch-fidelity call. With `cache_root` and `real_name`, the real side's features are computed
    once and reused (torch-fidelity's cache, written atomically)."""
    import torch_fidelity
    from torch_fidelity.metric_fid import KEY_METRIC_FID
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD

    cache = cache_root is not None and real_name is not None
    out = torch_fidelity.calculate_metrics(
        input1=Uint8Images(generated), input2=Uint8Images(real), isc=True, fid=True, prc=True,
        feature_extractor=extractor, feature_extractor_weights_path=weights, cuda=device.type == "cuda",
        batch_size=batch_size, isc_splits=min(10, len(generated)), prc_neighborhood=k, save_cpu_ram=True,
        cache=cache, cache_root=str(cache_root) if cache else None,
        input2_cache_name=f"{real_name}-{file_digest(weights)}" if cache else None, verbose=False)
    return {"is": float(out[KEY_METRIC_ISC_MEAN]), "is_std": float(out[KEY_METRIC_ISC_STD]),
            "fid": float(out[KEY_METRIC_FID]), "precision": float(out["precision"]), "recall": float(out["recall"]),
            "f_score": float(out["f_score"])}


# ------------------------------------------------------------------------ t-SNE of teacher features (Figs. 4, 7)


@torch.no_grad()
def layer_features(model: nn.Module, x: torch.Tensor, device: torch.device, layers: list[str], pool: int = 4) -> dict[str, np.ndarray]:
    """Teacher features per layer, batched: 'stageK' = the K-th stage's feature map average-pooled to pool x pool
    and flattened (keeps a coarse layout at any resolution); 'embedding' = the penultimate features."""
    was_training = model.training
    model.eval().to(device)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for xb in x.split(inference_batch(device)):
        feats, _ = model.forward_stages(xb.to(device).float())
        for name in layers:
            f = model.pool(feats[-1]) if name == "embedding" else F.adaptive_avg_pool2d(feats[int(name[5:]) - 1], pool)
            out[name].append(torch.flatten(f, 1).float().cpu())
    model.train(was_training)
    return {name: torch.cat(v).numpy() for name, v in out.items()}


def tsne_2d(features: np.ndarray, seed: int, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE (scikit-learn) of (N, D) features, after PCA to 50 dimensions (at most N) when D is larger."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    seed %= 2**32
    f = features - features.mean(0)
    k = min(50, *f.shape)
    if f.shape[1] > k:
        f = PCA(k, random_state=seed).fit_transform(f)
    tsne = TSNE(2, perplexity=min(perplexity, (len(f) - 1) / 3), init="pca", random_state=seed)
    return tsne.fit_transform(f).astype(np.float32)
