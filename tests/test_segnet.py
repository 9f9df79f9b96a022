"""SegNet: the decoder upsamples with the encoder's pooling indices, trains from a config, runs on the engines."""

from __future__ import annotations

import pytest
import rasterio
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from rasterio.features import rasterize

from geoseg.cli.main import cli
from geoseg.errors import GeosegError
from geoseg.models import SegNet, create_model, output_stride
from geoseg.models.segnet import unpool
from geoseg.training import train
from tests.test_train import scene_with_buildings, write_config


def test_unpool_puts_each_value_where_its_maximum_was():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 12)
    pooled, idx = F.max_pool2d(x, 2, 2, return_indices=True)
    up = unpool(pooled, idx, x.shape[-2:])
    assert torch.equal(up, F.max_unpool2d(pooled, idx, 2, 2, output_size=x.shape[-2:]))
    # one non-zero per 2x2 window, at the window's maximum, equal to it
    win = up.unfold(2, 2, 2).unfold(3, 2, 2).reshape(2, 3, 4, 6, 4)
    assert ((win != 0).sum(-1) == 1).all()
    src = x.unfold(2, 2, 2).unfold(3, 2, 2).reshape(2, 3, 4, 6, 4)
    assert torch.equal((win != 0).float().argmax(-1), src.argmax(-1))
    assert torch.equal(win.sum(-1), pooled)


@pytest.mark.parametrize("encoder", ["basic", "vgg11_bn"])
def test_decoder_output_depends_on_the_pooling_indices(encoder):
    torch.manual_seed(1)
    net = SegNet(encoder, in_channels=3, classes=4).eval()
    x1 = torch.rand(1, 3, 64, 64)
    x2 = torch.roll(x1, shifts=(1, 1), dims=(2, 3))  # the same values, maxima at other places in their windows
    with torch.no_grad():
        pooled, own = net.encoder(x1)
        _, other = net.encoder(x2)
        moved = sum((a != b).float().mean().item() for (a, _), (b, _) in zip(own, other)) / len(own)
        assert moved > 0.3  # the inputs' pooling positions differ
        mine, swapped = net.decode(pooled, own), net.decode(pooled, other)
        assert torch.equal(mine, net(x1))
        # the same pooled features, unpooled at the other input's positions: the output changes by more than
        # it varies across the tile (a fresh network's output is nearly constant: its spatial part is compared)
        spatial = (mine - mine.mean(dim=(2, 3), keepdim=True)).abs().mean()
        assert (mine - swapped).abs().mean() > 0.5 * spatial > 0
    assert output_stride(net) == (16 if encoder == "basic" else 32)


def test_vgg_encoder_is_the_registrys_with_its_keys():
    from segmentation_models_pytorch.encoders import get_encoder

    net = create_model("segnet", "vgg16_bn", 4, 3)
    ref = get_encoder("vgg16_bn", in_channels=4, depth=5, weights=None)
    own = {k.removeprefix("encoder."): v.shape for k, v in net.state_dict().items() if k.startswith("encoder.")}
    assert own == {k: v.shape for k, v in ref.state_dict().items()}
    # the paper's 13 encoder convolutions, and 13 in the mirrored decoder
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.encoder.modules()) == 13
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.decoder.modules()) == 13
    assert net.head.out_channels == 3


def test_encoder_without_max_pooling_is_refused():
    with pytest.raises(GeosegError, match="segnet needs an encoder whose downsampling is max pooling"):
        create_model("segnet", "resnet18", 3, 2)


def test_small_segnet_overfits_a_toy_scene_and_runs_on_every_engine(tmp_path):
    scene, labels, polys = scene_with_buildings(tmp_path)
    cfg = write_config(tmp_path, model={"architecture": "segnet", "encoder": "basic", "arch_params": {}},
                       sampling={"chips_per_epoch": 32}, train={"epochs": 25, "lr": 0.01})
    out = train(cfg, tmp_path / "model", progress=False)
    with rasterio.open(scene) as src:
        truth = rasterize(polys, out_shape=src.shape, transform=src.transform).astype(bool)
    got = {}
    for engine in ("torch", "onnxruntime", "openvino"):
        r = CliRunner().invoke(cli, ["predict", str(out), str(scene), "-o", str(tmp_path / engine), "--no-progress",
                                     "--engine", engine, "--precision", "fp32"])
        assert r.exit_code == 0, r.output
        with rasterio.open(tmp_path / engine / "scene.classes.tif") as src:
            got[engine] = src.read(1) == 1
    iou = (got["torch"] & truth).sum() / (got["torch"] | truth).sum()
    assert iou > 0.9, iou
    for engine in ("onnxruntime", "openvino"):
        assert (got[engine] == got["torch"]).mean() > 0.999, engine
