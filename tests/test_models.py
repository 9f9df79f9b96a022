import pytest
import torch

from geoseg.errors import GeosegError
from geoseg.models import FCN, available_architectures, create_model
from geoseg.models.fcn import _Up


@pytest.mark.parametrize("arch", ["fcn8s", "fcn16s", "fcn32s", "unet", "deeplabv3plus", "deeplabv3"])
def test_forward_and_backward_give_input_sized_outputs(arch):
    torch.manual_seed(0)
    model = create_model(arch, "resnet18", 4, 5)
    x = torch.randn(2, 4, 64, 64, requires_grad=True)
    y = model(x)
    assert y.shape == (2, 5, 64, 64)
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.grad is not None)


def test_fcn_structure_follows_the_paper():
    m8, m32 = FCN("8s", "resnet18", 3, 6), FCN("32s", "resnet18", 3, 6)
    assert isinstance(m8.up_final, _Up) and m8.up_final.stride == (8, 8)
    assert m8.up32.stride == (2, 2) and m8.up16.stride == (2, 2)
    assert m32.up_final.stride == (32, 32)
    assert m8.score16.kernel_size == (1, 1) and m8.score8.kernel_size == (1, 1)
    # skip scores start at zero: a fresh FCN-8s equals its own coarse path
    assert m8.score8.weight.abs().sum() == 0


def test_learned_upsampling_starts_as_bilinear_interpolation():
    up = _Up(1, 2)
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    y = up(x)
    assert y.shape == (1, 1, 8, 8)
    # interior values are the bilinear mean of neighbours (ramps, not blocks)
    assert torch.allclose(y[0, 0, 3, 3:5], torch.tensor([6.25, 6.75]))


def test_registry_lists_names_on_unknown_architecture():
    assert {"unet", "deeplabv3", "deeplabv3plus", "fcn8s", "fcn16s", "fcn32s", "fpn"} <= set(available_architectures())
    with pytest.raises(GeosegError, match="unknown architecture 'unetz'.*deeplabv3plus.*fcn8s"):
        create_model("unetz", "resnet18", 3, 2)
    with pytest.raises(GeosegError, match="cannot build unet with encoder 'nope'"):
        create_model("unet", "nope", 3, 2)
