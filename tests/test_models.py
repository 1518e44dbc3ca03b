import pytest
import torch
from torch import nn

from coinfer.models import RoadSignCNN, device_part_parameters, feature_shape, road_sign_cnn, split


@pytest.fixture(scope="module")
def model():
    return road_sign_cnn(seed=0).eval()


def test_architecture_matches_the_paper(model):
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    pools = [m for m in model if isinstance(m, nn.MaxPool2d)]
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert len(convs) == 6 and all(c.out_channels == 64 and c.kernel_size == (3, 3) for c in convs)
    assert len(pools) == 3 and len(linears) == 2 and linears[-1].out_features == 43
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 43)


@pytest.mark.parametrize("k", range(1, 7))
def test_split_identity_and_feature_shape(model, k):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(k))
    parts = split(model, at=k)
    with torch.no_grad():
        v = parts.device(x)
        assert v.shape[1:] == feature_shape(k)
        assert torch.equal(parts.edge(v), model(x))
    assert parts.at == k
    # the device part ends with the ReLU of conv k: features are non-negative
    assert (v >= 0).all()


def test_split_points_follow_the_convention():
    assert [feature_shape(k) for k in (2, 4, 6)] == [(64, 32, 32), (64, 16, 16), (64, 8, 8)]
    parts = split(road_sign_cnn(), at=2)
    assert isinstance(parts.device[-1], nn.ReLU) and isinstance(parts.edge[0], nn.MaxPool2d)


def test_split_shares_parameters(model):
    parts = split(model, at=3)
    assert parts.device[0].weight is model[0].weight


def test_seeded_initialisation():
    a, b, c = road_sign_cnn(seed=1), road_sign_cnn(seed=1), road_sign_cnn(seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[0].weight, c[0].weight)


@pytest.mark.parametrize("at, err", [(0, ValueError), (7, ValueError), (2.0, TypeError), (True, TypeError)])
def test_split_rejects_bad_points(model, at, err):
    with pytest.raises(err, match="at"):
        split(model, at=at)


def test_split_rejects_non_sequential():
    with pytest.raises(TypeError, match="model"):
        split(nn.Linear(2, 2), at=1)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 1, 32, 32), (2, 3, 28, 28)])
def test_bad_input_shapes(model, shape):
    with pytest.raises(ValueError, match="shape"):
        model(torch.rand(*shape))


def test_integer_images_rejected(model):
    with pytest.raises(TypeError, match="floating"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        RoadSignCNN(num_classes=0)


@pytest.mark.parametrize("at", [1, 2, 4, 6])
def test_device_part_parameters_are_those_of_the_first_convolutions(model, at):
    params = device_part_parameters(model, at=at)
    convs = [m for m in model if isinstance(m, nn.Conv2d)][:at]
    assert [id(p) for p in params] == [id(p) for c in convs for p in (c.weight, c.bias)]
    assert sum(p.numel() for p in params) == 3 * 64 * 9 + 64 + (at - 1) * (64 * 64 * 9 + 64)
    # the device part of the split holds exactly these parameters
    assert {id(p) for p in split(model, at=at).device.parameters()} == {id(p) for p in params}


def test_device_part_parameters_rejects_bad_input(model):
    with pytest.raises(TypeError, match="model"):
        device_part_parameters(nn.Linear(2, 2), at=1)
    with pytest.raises(ValueError, match="at"):
        device_part_parameters(model, at=7)
    with pytest.raises(ValueError, match="fewer than at = 3"):
        device_part_parameters(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), at=3)
