import pytest

from pasture.classify.recipes import RECIPES, get_recipe, with_overrides
from pasture.core.errors import UserError


def test_paper_recipe_is_exactly_the_reports():
    paper = get_recipe("paper")
    assert (paper.optimizer, paper.lr, paper.momentum, paper.weight_decay) == ("sgd", 0.01, 0.99, 0.05)
    assert (paper.batch_size, paper.epochs, paper.image_size) == (4, 20, 64)
    assert paper.model == "paper-cnn" and paper.augment == "none" and paper.schedule == "constant"
    assert paper.label_smoothing == 0 and paper.warmup_epochs == 0


def test_every_recipe_is_named_by_its_key_resolves_and_is_distinct():
    import dataclasses

    from pasture.classify.recipes import resolve_recipe

    for name, recipe in RECIPES.items():
        assert recipe.name == name and recipe.description
        assert resolve_recipe(name) == recipe  # its model, augmentation and sizes fit together
    for a in RECIPES.values():
        for b in RECIPES.values():
            if a is not b:  # equal but for the name would be one recipe under two names
                assert dataclasses.replace(a, name=b.name, description=b.description) != b


def test_overrides_replace_only_given_fields():
    changed = with_overrides(get_recipe("paper"), epochs=3, lr=None, augment="paper")
    assert changed.epochs == 3 and changed.lr == 0.01 and changed.augment == "paper"
    assert get_recipe("paper").epochs == 20  # presets are immutable data


@pytest.mark.parametrize(
    "field,value,flag", [("epochs", 0, "--epochs"), ("batch_size", 0, "--batch-size"), ("lr", -1.0, "--lr")]
)
def test_impossible_overrides_are_user_errors(field, value, flag):
    with pytest.raises(UserError, match=flag):
        with_overrides(get_recipe("paper"), **{field: value})


def test_unknown_recipe():
    with pytest.raises(UserError, match="--recipe nope"):
        get_recipe("nope")
