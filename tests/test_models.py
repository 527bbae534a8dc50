import pytest
import torch

from pasture.core.errors import UserError
from pasture.models import create_model, list_models
from pasture.models.paper_cnn import PaperCNN, paper_cnn_flatten_size
from pasture.models.registry import Dropout


@pytest.mark.parametrize("image_size", [12, 16, 32, 64, 100, 128])
def test_paper_cnn_output_shape_for_many_sizes(image_size):
    model = create_model("paper-cnn", 3, image_size).eval()
    logits = model(torch.rand(2, 3, image_size, image_size))
    assert logits.shape == (2, 3)


def test_flatten_size_follows_the_report_formula():
    # 64 -> conv3 62 -> pool 31 -> conv2 30 -> pool 15 -> conv2 14: 14*14*8 (the report's text says 1352)
    assert paper_cnn_flatten_size(64) == 1568
    assert paper_cnn_flatten_size(62) == 1352 == 13 * 13 * 8
    assert paper_cnn_flatten_size(16) == 2 * 2 * 8
    assert PaperCNN(2, 64).classifier[0].in_features == 1568


def test_paper_cnn_layers_are_the_reports():
    model = PaperCNN(2, 64)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(16, (3, 3)), (32, (2, 2)), (8, (2, 2))]
    linears = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert [layer.out_features for layer in linears] == [800, 200, 2]
    dropouts = [m.p for m in model.modules() if isinstance(m, Dropout)]
    assert dropouts == [0.5, 0.15, 0.5]


def test_paper_cnn_equals_the_reports_layer_order_in_training():
    # pasture applies each ReLU after the pooling (cheaper); the report's order, conv -> ReLU
    # [-> dropout] -> pool, must give the same logits and the same gradients, dropout mask included.
    torch.manual_seed(0)
    model = PaperCNN(2, 32).train()
    f = model.features
    report_order = torch.nn.Sequential(
        f[0],
        torch.nn.ReLU(),
        f[1],
        f[3],
        torch.nn.ReLU(),
        f[4],
        f[5],
        f[7],
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        model.classifier,
    ).train()
    images = torch.randn(6, 3, 32, 32)
    torch.manual_seed(5)
    ours = model(images)
    ours.square().sum().backward()
    ours_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.manual_seed(5)
    theirs = report_order(images)
    theirs.square().sum().backward()
    assert torch.allclose(ours, theirs, atol=1e-6)
    for mine, reference in zip(ours_grads, (p.grad for p in model.parameters())):
        assert torch.allclose(mine, reference, atol=1e-6)


def test_model_returns_logits_not_probabilities():
    torch.manual_seed(0)
    model = create_model("paper-cnn", 2, 32).eval()
    logits = model(torch.rand(8, 3, 32, 32))
    assert not torch.allclose(logits.sum(1), torch.ones(8))  # a softmax output would sum to 1
    assert not any(isinstance(m, torch.nn.Softmax) for m in model.modules())


def test_too_small_input_is_a_user_error():
    with pytest.raises(UserError, match="--image-size 8: too small for paper-cnn"):
        create_model("paper-cnn", 2, 8)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(UserError, match="paper-cnn"):
        create_model("resnet-9000", 2, 64)
    assert "paper-cnn" in list_models()


def test_normalisation_is_inside_the_model():
    model = create_model("paper-cnn", 2, 16)
    assert torch.allclose(model.normalize(torch.full((1, 3, 2, 2), 0.5)), torch.zeros(1, 3, 2, 2))
    assert "normalize.mean" in model.state_dict()


def test_dropout_zeroes_with_probability_p_and_keeps_the_mean():
    torch.manual_seed(0)
    layer = Dropout(0.3)
    x = torch.ones(200_000)
    out = layer(x)
    kept = out != 0
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.01  # fraction zeroed ~ p
    keep_probability = 1 - layer.drop_levels / 65536  # p rounded to 16 bits: 0.3 -> 0.29999
    assert abs(keep_probability - 0.7) < 1e-4
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / keep_probability))  # survivors scaled
    assert abs(out.mean().item() - 1.0) < 0.01  # expectation unchanged, as nn.Dropout
    assert torch.equal(layer.eval()(x), x)  # identity at evaluation
    with pytest.raises(ValueError):
        Dropout(1.0)


def test_dropout_gradient_flows_only_through_kept_elements():
    torch.manual_seed(1)
    x = torch.randn(1000, requires_grad=True)
    out = Dropout(0.5)(x)
    out.sum().backward()
    assert torch.equal(x.grad != 0, out.detach() != 0)
    assert torch.allclose(x.grad[x.grad != 0], torch.full_like(x.grad[x.grad != 0], 2.0))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_dropout_mask_is_independent_per_element_in_any_layout(layout):
    torch.manual_seed(2)
    x = torch.ones(8, 16, 40, 40)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.ones(8, 16, 40, 80)[..., ::2]  # not dense: the mask is drawn in x's logical shape
    out = Dropout(0.15)(x)
    assert out.shape == x.shape
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
    zeroed = (out == 0).float()
    # Every channel, row and column sees the same drop rate: no stride pattern in the 4-per-draw mask.
    for dim in (1, 2, 3):
        rates = zeroed.mean(tuple(d for d in range(4) if d != dim))
        assert rates.min() > 0.10 and rates.max() < 0.20, (dim, rates.min(), rates.max())
    # Neighbouring elements (which share a 64-bit draw) are not correlated.
    flat = zeroed.flatten()
    both = (flat[:-1] * flat[1:]).mean().item()
    assert abs(both - 0.15**2) < 0.005


@pytest.mark.parametrize("name", ["paper-cnn", "resnet-small"])
def test_channels_last_layout_gives_the_same_logits(name):
    # The NHWC layout is a speed choice only: the same weights must give the same outputs (to rounding).
    torch.manual_seed(0)
    fast = create_model(name, 2, 32).eval()
    assert fast.channels_last
    plain = type(fast)(type(fast.net)(2, 32) if name == "paper-cnn" else type(fast.net)(2), (0.5,) * 3, (0.5,) * 3)
    plain.load_state_dict(fast.state_dict())
    assert not plain.channels_last
    images = torch.rand(4, 3, 32, 32)
    assert torch.allclose(fast(images), plain.eval()(images), atol=1e-5)
