import pytest
import torch

from natinv.models import ARCHS, build_model
from natinv.synthesis.bn_stats import bn_layers
from natinv.synthesis.ftp import FeatureTransferPyramid


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("in_channels,num_classes", [(3, 10), (1, 100)])
def test_every_model_gives_stages_logits_and_ftp(arch, in_channels, num_classes):
    model = build_model(arch, num_classes, in_channels, width=8 if arch != "mobilenetv2" else 16).eval()
    x = torch.randn(2, in_channels, 32, 32)
    feats, logits = model.forward_stages(x)
    assert logits.shape == (2, num_classes)
    assert torch.allclose(model(x), logits, atol=1e-5)
    assert bn_layers(model), "every model needs BatchNorm layers for the BN-statistics loss"
    sizes = [f.shape[-1] for f in feats]
    assert len(feats) >= 3 and all(a > b for a, b in zip(sizes, sizes[1:])), sizes  # one stage per resolution
    shapes = model.stage_shapes(in_channels, 32)
    assert shapes == [tuple(f.shape[1:]) for f in feats]
    for stages in (list(range(len(shapes))), [len(shapes) - 1], [len(shapes) - 2, len(shapes) - 1]):
        ftp = FeatureTransferPyramid([shapes[i] for i in stages], in_channels, 32)
        m = ftp([feats[i] for i in stages])
        assert m.shape == (2, in_channels, 32, 32)


def test_paper_ftp_shapes_for_resnet34():
    shapes = build_model("resnet34", 10, 3).stage_shapes(3, 32)
    assert shapes == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    ftp = FeatureTransferPyramid(shapes, 3, 32)
    # paper Table 7: 1x1 convs 512->256, 256->128, 128->64, 64->3; 3x3 convs at 256, 128, 64 channels
    assert [(p.in_channels, p.out_channels) for p in ftp.proj] == [(512, 256), (256, 128), (128, 64), (64, 3)]
    assert [m.in_channels for m in ftp.mix[1:]] == [256, 128, 64]


def test_unknown_arch_is_a_clear_error():
    from natinv.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown model arch 'resnet9'"):
        build_model("resnet9", 10, 3)
