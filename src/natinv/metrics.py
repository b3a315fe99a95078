"""How real the images are (paper Tables 1, 8): Fréchet distance and k-NN precision/recall on embeddings.

The math is torch-fidelity's (`fid_features_to_statistics`, `fid_statistics_to_metric`, `prc_features_to_metric`);
this module only produces the embeddings, batched, from any network with `embed` (the teacher's penultimate
features, or an independent evaluator's). The Inception metrics of the paper's Table 1 (IS, FID, P&R) are one
torch-fidelity call on uint8 images when Inception-v3 weights are at hand (or any other registered extractor).
"""
from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from natinv.errors import ConfigError
from natinv.imports import installed_attribute
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


PRC_BLOCK = 2**26  # distances computed at once by precision_recall: 256 MB of float32, whatever the set sizes


def precision_recall(generated: torch.Tensor, real: torch.Tensor, k: int = 3, device: torch.device | None = None,
                     block: int = PRC_BLOCK) -> dict[str, float]:
    """k-NN precision (generated samples inside the real manifold) and recall (real samples inside the generated one),
    as torch-fidelity defines them (Kynkaenniemi et al. 2019: a sample's ball reaches its k-th nearest neighbour in its
    own set). Computed in row blocks of at most `block` distances on `device` (default: the features' own), so memory
    beyond the features stays bounded for any number of images (torch-fidelity holds 10,000 rows x the other set)."""
    dev = device or generated.device
    g, r = generated.float().to(dev), real.float().to(dev)
    precision = _inside(g, r, _kth_neighbour(r, k, block), block)
    recall = _inside(r, g, _kth_neighbour(g, k, block), block)
    return {"precision": precision, "recall": recall, "f_score": 2 * precision * recall / max(1e-5, precision + recall)}


def _row_blocks(x: torch.Tensor, columns: int, block: int):
    rows = max(1, block // max(1, columns))
    return (x[i:i + rows] for i in range(0, len(x), rows))


def _kth_neighbour(x: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Each sample's distance to its k-th nearest other sample of x (the sample itself is the nearest). topk, not
    kthvalue: on the CPU kthvalue copies the whole distance block and allocates an int64 index for every entry (4x the
    block), topk works row by row."""
    n = min(k + 1, len(x))
    return torch.cat([torch.cdist(rows, x).topk(n, dim=1, largest=False).values[:, -1] for rows in _row_blocks(x, len(x), block)])


def _inside(x: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, block: int) -> float:
    """The fraction of x inside any ball (centres, radii)."""
    inside = sum(int((torch.cdist(rows, centres) <= radii).any(dim=1).sum()) for rows in _row_blocks(x, len(centres), block))
    return inside / len(x)


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
    if ":" not in spec:
        raise ConfigError(f"metrics.inception.feature_extractor = {spec!r}: expected one of "
                          f"{', '.join(sorted(FEATURE_EXTRACTORS_REGISTRY))} or 'module:Class' of an installed module")
    extractor = installed_attribute("metrics.inception.feature_extractor", spec)
    try:
        if not isinstance(extractor, type):
            raise ValueError(f"{spec.partition(':')[2]} is a {type(extractor).__name__}, not a class")
        register_feature_extractor(name, extractor)
    except (AttributeError, ValueError) as exc:
        raise ConfigError(f"metrics.inception.feature_extractor = {spec!r}: {exc}; expected one of "
                          f"{', '.join(sorted(FEATURE_EXTRACTORS_REGISTRY))} or 'module:Class'") from None
    return name


def inception_weights(spec: str, weights: str | None) -> tuple[str | None, str | None]:
    """(weights file to load, None) when the extractor can run without a download, else (None, why not).
    Inception-v3: the configured file, or torch-fidelity's copy in the torch hub cache; others: as configured.
    Whatever the file, it is only ever read with `torch.load(weights_only=True)` (see safe_extractor)."""
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


def check_weights_file(path: str) -> None:
    """A weights file must be a plain state_dict: loaded here with weights_only=True (PyTorch's restricted unpickler,
    which builds tensors and containers and calls nothing else), or one line saying why not."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ... all mean "not plain weights"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ConfigError(f"metrics.inception.weights = {path!r}: not a plain weights file (refused by "
                          f"torch.load(weights_only=True): {type(exc).__name__}: {first})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"metrics.inception.weights = {path!r}: expected a state_dict (names to tensors), got {type(state).__name__}")


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every `torch.load` inside (torch-fidelity's extractors load their weights with weights_only=False, and
    torch.hub's load_state_dict_from_url defaults to it) runs with weights_only=True: no file can run code."""
    real = torch.load

    def load(*args, **kwargs):
        kwargs["weights_only"] = True
        return real(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = real


def safe_extractor(extractor: str, layers: list[str], weights: str | None, cuda: bool):
    """torch-fidelity's feature extractor `extractor` producing `layers`, built with its weights loaded safely."""
    from torch_fidelity.utils import create_feature_extractor

    if weights is not None:
        check_weights_file(weights)
    with weights_only_loads():
        return create_feature_extractor(extractor, layers, cuda=cuda, feature_extractor_weights_path=weights, verbose=False)


def _layers(extractor: str) -> dict[str, str]:
    """The layer each metric reads, by torch-fidelity's defaults for the extractor."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    cls = FEATURE_EXTRACTORS_REGISTRY[extractor]
    return {m: cls.get_default_feature_layer_for_metric(m) for m in ("isc", "fid", "prc")}


def _features(images: torch.Tensor, fe, layers: list[str], batch_size: int, cuda: bool) -> dict[str, torch.Tensor]:
    from torch_fidelity.utils import get_featuresdict_from_dataset

    out = get_featuresdict_from_dataset(Uint8Images(images), fe, batch_size, cuda, True, False)
    return {k: out[k] for k in layers}


def cached_features(path: Path | None, compute) -> dict[str, torch.Tensor]:
    """Features from a safetensors file (arrays only: nothing to unpickle), or computed and stored there atomically."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file, save

    from natinv.io import atomic_write_bytes

    from natinv.checkpoint import weights_digest

    if path is not None and path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                digest = (f.metadata() or {}).get("sha256")
            feats = load_file(str(path))
            if digest == weights_digest(feats):
                return feats
        except (SafetensorError, OSError, ValueError):
            pass  # unreadable or changed since it was written: computed again and replaced
    feats = {k: v.contiguous() for k, v in compute().items()}
    if path is not None:
        atomic_write_bytes(path, save(feats, metadata={"sha256": weights_digest(feats)}))
    return feats


def fidelity_metrics(generated: torch.Tensor, real: torch.Tensor, extractor: str, weights: str | None,
                     device: torch.device, *, k: int = 3, batch_size: int = 64, cache_root: Path | None = None,
                     real_name: str | None = None) -> dict[str, float]:
    """IS of `generated`, and FID and k-NN precision/recall against `real` (uint8 images), all from one feature
    extractor (torch-fidelity's, its math too). With `cache_root` and `real_name`, the real side's features are
    computed once and kept as `{cache_root}/{real_name}-{extractor}-{weights digest}.safetensors`."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    cuda = device.type == "cuda"
    layer = _layers(extractor)
    wanted = sorted(set(layer.values()))
    fe = safe_extractor(extractor, wanted, weights, cuda)
    gen = _features(generated, fe, wanted, batch_size, cuda)
    cache = None
    if cache_root is not None and real_name is not None:
        safe_name = re.sub(r"[^A-Za-z0-9_.-]", ".", extractor)
        cache = cache_root / f"{real_name}-{safe_name}-{file_digest(weights)}.safetensors"
    ref = cached_features(cache, lambda: _features(real, fe, wanted, batch_size, cuda))
    isc = isc_features_to_metric(gen[layer["isc"]], min(10, len(generated)), True, 2020)
    fid = fid_statistics_to_metric(fid_features_to_statistics(gen[layer["fid"]]), fid_features_to_statistics(ref[layer["fid"]]),
                                   False)
    prc = prc_features_to_metric(gen[layer["prc"]], ref[layer["prc"]], prc_neighborhood=k, save_cpu_ram=True, verbose=False)
    return {"is": float(isc[KEY_METRIC_ISC_MEAN]), "is_std": float(isc[KEY_METRIC_ISC_STD]),
            "fid": float(fid[KEY_METRIC_FID]), "precision": float(prc["precision"]), "recall": float(prc["recall"]),
            "f_score": float(prc["f_score"])}


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
