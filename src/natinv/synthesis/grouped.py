"""K one-to-one NaturalInversion image modules (generator, FTP, output head) run as one.

Each parameter of the K modules is stacked along a new first axis into one leaf tensor, which Adam optimizes; the K
batches' activations sit side by side along the channel axis, (B, K*C, H, W), so every convolution of the K modules is
one grouped convolution (groups = K), every BatchNorm one call over K*C channels (each module's statistics are its own
batch's, as alone), the linear layer one batched matrix product. One iteration of K batches dispatches the operators of
one module instead of K times as many (benchmarks/README.md, "Operators per synthesis iteration"); each batch's images and gradients are
the ones it gets alone, within float32 rounding.

The generators' BatchNorm running statistics are not kept: they are never read (the images are rendered in training
mode), and the K modules are discarded after their batches (`write_back` returns parameters and gradients to them,
for the meta-learned initialization).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def to_grouped(x: torch.Tensor, k: int) -> torch.Tensor:
    """(K*B, C, H, W) -> (B, K*C, H, W): batch k's channels at k*C .. (k+1)*C."""
    _, c, h, w = x.shape
    return x.reshape(k, -1, c, h, w).transpose(0, 1).reshape(-1, k * c, h, w)


def to_batches(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, K*C, H, W) -> (K*B, C, H, W), the inverse of to_grouped."""
    b, kc, h, w = x.shape
    return x.reshape(b, k, kc // k, h, w).transpose(0, 1).reshape(-1, kc // k, h, w)


class GroupedImages:
    """The K modules (NaturalInversionImage, one architecture) of a group of one-to-one batches as stacked parameters.

    `params[name]`: the K modules' parameter `name` stacked, (K, *shape), a leaf that requires grad."""

    def __init__(self, models: list[nn.Module]):
        self.models, self.k = models, len(models)
        self.template = models[0]
        self.params = {name: torch.stack([m.get_parameter(name).detach() for m in models]).requires_grad_()
                       for name, _ in self.template.named_parameters()}

    def parameters(self, prefix: str) -> list[torch.Tensor]:
        """The stacked parameters of the submodule `prefix` (generator, ftp, head)."""
        return [p for name, p in self.params.items() if name.startswith(prefix + ".")]

    @torch.no_grad()
    def write_back(self) -> None:
        """Each module's parameters (and gradients) from its slice of the stacked ones."""
        for name, stacked in self.params.items():
            for k, model in enumerate(self.models):
                p = model.get_parameter(name)
                p.copy_(stacked[k])
                p.grad = None if stacked.grad is None else stacked.grad[k].clone()

    def generate(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x = G_k(z_k | y_k) of every batch: z (K*B, latent), y (K*B,) -> (B, K*C, H, W)."""
        g = self.template.generator
        z = g.conditioned(z, y)
        w, b = self.params["generator.fc.weight"], self.params["generator.fc.bias"]
        h = torch.baddbmm(b.unsqueeze(1), z.view(self.k, -1, z.shape[1]), w.transpose(1, 2))
        h = h.view(self.k, -1, g.width, g.init_size, g.init_size).transpose(0, 1)
        return self._sequential("generator.body", g.body, h.reshape(-1, self.k * g.width, g.init_size, g.init_size))

    def ftp(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """m_L of every batch (FeatureTransferPyramid.forward, grouped): feats (K*B, C, h, w) -> (B, K*C_img, H, W)."""
        pyramid = self.template.ftp
        m = None
        for i, (size, f) in enumerate(zip(pyramid.sizes, reversed(feats))):
            f = to_grouped(f, self.k)
            h = self._conv(f"ftp.proj.{i}", pyramid.proj[i], f if m is None else self._conv(f"ftp.mix.{i}", pyramid.mix[i], m + f))
            m = h if tuple(h.shape[-2:]) == tuple(size) else F.interpolate(h, size=size, mode="nearest")
        return m

    def render(self, x: torch.Tensor, feats: list[torch.Tensor] | None, alpha: torch.Tensor | None) -> torch.Tensor:
        """I = alpha * tanh(W1(x + m_L)) of every batch (NaturalInversionImage.render, grouped): x (B, K*C, H, W);
        feats: the chosen stages' teacher features (K*B, ...) or None; alpha (K, B, C, 1, 1) or None (no ACS).
        Returns (K*B, C, H, W)."""
        if feats is not None:
            x = x + self.ftp(feats)
        image = torch.tanh(self._conv("head", self.template.head, x))
        if alpha is not None:
            image = image * alpha.transpose(0, 1).reshape(len(image), -1, 1, 1)
        return to_batches(image, self.k)

    def _sequential(self, prefix: str, seq: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(seq):
            name = f"{prefix}.{i}"
            if isinstance(layer, nn.Conv2d):
                h = self._conv(name, layer, h)
            elif isinstance(layer, nn.BatchNorm2d):
                affine = (self.params[f"{name}.weight"].flatten(), self.params[f"{name}.bias"].flatten()) if layer.affine else (None, None)
                h = F.batch_norm(h, None, None, *affine, training=True, eps=layer.eps)
            elif isinstance(layer, (nn.LeakyReLU, nn.ReLU, nn.Tanh, nn.Upsample, nn.Identity)):
                h = layer(h)  # no parameters, per channel or per pixel: the same on K*C channels
            else:
                raise TypeError(f"{type(layer).__name__} in {prefix}: GroupedImages has no grouped form of it")
        return h

    def _conv(self, name: str, conv: nn.Conv2d | nn.Identity, h: torch.Tensor) -> torch.Tensor:
        if isinstance(conv, nn.Identity):
            return h
        w, b = self.params[f"{name}.weight"], self.params.get(f"{name}.bias")
        return F.conv2d(h, w.flatten(0, 1), None if b is None else b.flatten(), conv.stride, conv.padding, conv.dilation,
                        conv.groups * self.k)
