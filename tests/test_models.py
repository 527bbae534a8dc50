import pytest
import torch

from pasture.errors import UserError
from pasture.models import create_model, list_models
from pasture.models.paper_cnn import PaperCNN, paper_cnn_flatten_size


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
    assert [l.out_features for l in linears] == [800, 200, 2]
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.5, 0.15, 0.5]


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
