import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from geoseg.errors import GeosegError
from geoseg.models.bundle import init_bundle, load_bundle, read_meta


@pytest.fixture()
def bundle(tmp_path):
    return init_bundle("fcn8s", tmp_path / "b", encoder="resnet18", bands=(3, 1), classes="building,water",
                       mean=(10.0, 20.0), std=(2.0, 4.0), tile_size=256, overlap=64, gsd=0.5)


def test_roundtrip_keeps_description_and_weights(bundle):
    meta = json.loads((bundle / "geoseg.json").read_text())
    assert meta["architecture"] == "fcn8s" and meta["encoder"] == "resnet18"
    assert meta["bands"] == [3, 1] and meta["normalization"] == {"mean": [10.0, 20.0], "std": [2.0, 4.0]}
    assert [c["name"] for c in meta["classes"]] == ["background", "building", "water"]
    assert meta["ignore_index"] == 255 and meta["tile_size"] == 256 and meta["overlap"] == 64
    assert meta["gsd"] == 0.5 and meta["geoseg_version"]
    b = load_bundle(bundle)
    saved = load_file(str(bundle / "model.safetensors"))
    for k, v in b.model.state_dict().items():
        assert torch.equal(v, saved[k])


def test_pickle_checkpoints_are_refused(tmp_path, bundle):
    ckpt = tmp_path / "model.pth"
    torch.save(load_bundle(bundle).model.state_dict(), ckpt)
    with pytest.raises(GeosegError, match=r"model\.pth: is a pickle checkpoint; geoseg never unpickles"):
        load_bundle(ckpt)
    d = tmp_path / "old"
    d.mkdir()
    (d / "weights.pt").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(GeosegError, match="weights.pt: is a pickle checkpoint"):
        load_bundle(d)


def test_missing_and_mismatched_weights_are_named(bundle):
    (bundle / "model.safetensors").rename(bundle / "gone")
    with pytest.raises(GeosegError, match="bundle has no weights"):
        load_bundle(bundle)
    state = load_file(str(bundle / "gone"))
    state["score32.weight"] = torch.zeros(7, 512, 1, 1)
    save_file(state, str(bundle / "model.safetensors"))
    with pytest.raises(GeosegError, match=r"tensor score32\.weight has shape \(7, 512, 1, 1\).*needs \(3, 512, 1, 1\)"):
        load_bundle(bundle)
    del state["score32.weight"]
    save_file(state, str(bundle / "model.safetensors"))
    with pytest.raises(GeosegError, match=r"missing tensors score32\.weight"):
        load_bundle(bundle)


def test_corrupt_weights_and_description(bundle):
    (bundle / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(GeosegError, match="corrupt weights"):
        load_bundle(bundle)
    meta = json.loads((bundle / "geoseg.json").read_text())
    meta["tile_sise"] = 3
    (bundle / "geoseg.json").write_text(json.dumps(meta))
    with pytest.raises(GeosegError, match="unknown key 'tile_sise'"):
        read_meta(bundle)
