"""The probe's head: an L2 logistic regression solved to convergence, its C chosen by cross-validation
(leave one source out when sources are known)."""

from __future__ import annotations

import pytest
import torch

from pasture.classify.logistic import HEAD_CS, choose_head_c, fit_linear_head, fit_logistic_head
from pasture.classify.recipes import get_recipe, with_overrides
from pasture.data.splits import held_out_folds


def blobs(n_per_class: list[int], dims: int = 6, seed: int = 0, spread: float = 1.5):
    """Overlapping Gaussian classes in `dims` dimensions (deterministic)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(n_per_class), dims, generator=generator) * spread
    features = torch.cat([centres[k] + torch.randn(n, dims, generator=generator) for k, n in enumerate(n_per_class)])
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(n_per_class)])
    return features, labels


@pytest.mark.parametrize("counts", [[40, 12], [20, 25, 15]])
@pytest.mark.parametrize("c", [0.05, 1.0])
def test_the_head_is_scikit_learns_logistic_regression(counts, c):
    """The old head (AdamW, 100 epochs, label smoothing 0.1) stopped far from this optimum."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    features, labels = blobs(counts)
    head = fit_logistic_head(features, labels, len(counts), c, balance=True)
    reference = sklearn.LogisticRegression(C=c, class_weight="balanced", tol=1e-10, max_iter=10_000)
    reference.fit(features.double().numpy(), labels.numpy())
    weight = head.weight.detach().double()
    if len(counts) == 2:  # scikit-learn's binary model holds one direction: w1 - w0 here
        ours, theirs = (weight[1] - weight[0]).numpy(), reference.coef_[0]
    else:  # softmax weights are defined up to a shift shared by all classes; both centre them
        ours, theirs = (weight - weight.mean(0)).numpy(), reference.coef_ - reference.coef_.mean(0)
    assert abs(ours - theirs).max() <= 1e-3 * abs(theirs).max()
    with torch.no_grad():
        predicted = head(features).argmax(1).numpy()
    assert (predicted == reference.predict(features.double().numpy())).all()


def test_the_head_is_the_same_whatever_the_seed_and_balancing_counts():
    features, labels = blobs([45, 8], seed=3, spread=0.8)
    probe = with_overrides(get_recipe("probe"), head_c=0.3)
    first, _, _ = fit_linear_head(features, labels, 2, probe.head_c, probe.balance_classes, seed=0)
    again, _, _ = fit_linear_head(features, labels, 2, probe.head_c, probe.balance_classes, seed=123)
    assert torch.equal(first.weight, again.weight) and torch.equal(first.bias, again.bias)
    unbalanced, _, _ = fit_linear_head(features, labels, 2, probe.head_c, False)
    with torch.no_grad():
        rare_balanced = int((first(features).argmax(1) == 1).sum())
        rare_unbalanced = int((unbalanced(features).argmax(1) == 1).sum())
    assert rare_balanced > rare_unbalanced  # the rare class is called more often when it counts equally


def test_folds_hold_out_one_source_each_when_sources_are_known():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1])
    groups = ["a", "a", "b", "b", "c", "c", "d", "d"]
    folds, how = held_out_folds(labels, groups, seed=0)
    assert how == "leave-one-source-out over 4 sources"
    assert [sorted(fold.tolist()) for fold in folds] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    folds, how = held_out_folds(torch.tensor([0] * 12 + [1] * 3), None, seed=0)
    assert how == "3 stratified folds" and sorted(torch.cat(folds).tolist()) == list(range(15))
    assert held_out_folds(torch.tensor([0, 0, 0, 1]), None, seed=0)[0] == []  # a class of 1 photo: no folds


def test_c_is_chosen_on_held_out_sources_and_a_one_class_source_cannot_judge():
    features, labels = blobs([30, 30], seed=5)
    # Source "cows" holds every cow: leaving it out leaves no cow to train on, so that fold is skipped.
    groups = ["cows"] * 30 + ["h1"] * 10 + ["h2"] * 10 + ["h3"] * 10
    c, how, held_logits = choose_head_c(features, labels, 2, True, groups, seed=0)
    assert how["folds"] == "leave-one-source-out over 4 sources" and how["usable_folds"] == 3
    # the held-out logits: the cows were never held out by a usable fold (NaN), every horse was
    assert held_logits[:30].isnan().all() and not held_logits[30:].isnan().any()
    assert c in HEAD_CS and set(how["held_out_cross_entropy_by_c"]) == {str(value) for value in HEAD_CS}
    scores = how["held_out_cross_entropy_by_c"]
    assert scores[str(c)] == min(scores.values())
    # Noise features: held-out cross-entropy is lowest with the strongest prior.
    noise = torch.randn(60, 20, generator=torch.Generator().manual_seed(1))
    assert choose_head_c(noise, labels, 2, True, None, seed=0)[0] == min(HEAD_CS)


def test_a_given_c_skips_the_search():
    features, labels = blobs([20, 20])
    _, history, how = fit_linear_head(features, labels, 2, 2.0, get_recipe("probe").balance_classes)
    assert how == {"chosen_c": 2.0, "folds": "none (head_c given)"}
    assert history and history[-1]["train_loss"] < history[0]["train_loss"] + 1e-12
