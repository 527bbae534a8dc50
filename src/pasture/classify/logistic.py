"""The probe's head: a logistic regression on frozen features, solved to convergence (L-BFGS, seconds),
its L2 strength C chosen by cross-validation: leave one photo source out when the sources are known
(--groups), since that is how a user's photos will differ; stratified folds otherwise.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from pasture.classify.steps import class_weights
from pasture.core.cache import ContentCache
from pasture.core.runtime import stop_point
from pasture.data.splits import held_out_folds

# The head's regularisation strengths tried by cross-validation (scikit-learn's C: larger = weaker L2).
# On leave-one-source-out over the 8 photo sources every C from 0.01 to 10 scored within 2 points
# (issue 25's replication), so a coarse grid is enough; what matters is solving to convergence.
HEAD_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
HEAD_MAX_ITERATIONS = 500
HEAD_ITERATIONS_PER_ROUND = 10  # between checks for a stop request (and history records)
HEAD_TOLERANCE = 1e-5  # largest gradient entry of the (n-normalised) objective at convergence
SEARCH_FORMAT = "v1"  # bump when choose_head_c's record changes, so cached choices are not reused
DEFAULT_HEAD_C = 0.1  # when no fold can be held out (issue 25: 94.0% leave-one-source-out at C = 0.1)


def fit_logistic_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    c: float,
    balance: bool,
    start: nn.Linear | None = None,
    on_iteration=None,
    row_weights: torch.Tensor | None = None,
) -> nn.Linear:
    """Multinomial logistic regression with an L2 penalty, solved to convergence by L-BFGS (float64).

    Minimises  C * sum_i w_i * CE_i + ||W||^2 / 2  (scikit-learn's LogisticRegression, bias not
    penalised), divided by n so the numbers stay of order one; w_i balances the classes when
    `balance`. Convex: the same data give the same head whatever the seed, and the weights agree with
    scikit-learn's to 1e-4 of their size (tests/test_probe_head.py). Why not the old AdamW loop (100
    epochs, label smoothing 0.1): on sources the model never saw it scored 82% against 92-94% for this
    head on the same features (issue 25), and it had been chosen on in-source splits.
    torch's L-BFGS rather than scipy's: scipy's Fortran L-BFGS-B calls OpenBLAS, whose threads spin
    against torch's on 2 cores (the C search took 17 s instead of 2)."""
    x = features.double()
    n = len(labels)
    per_class = class_weights(labels, num_classes, balance_classes=balance)
    weights = per_class.double()[labels] if per_class is not None else torch.ones(n, dtype=torch.float64)
    if row_weights is not None:  # e.g. synthetic rows weighted to their share of the training signal
        weights = weights * row_weights.double()
    # Two classes: softmax's two weight rows hold one direction twice (w and -w at the optimum), so the
    # penalty is doubled to equal scikit-learn's binary model exactly (its C then means the same here).
    penalty = (2.0 if num_classes == 2 else 1.0) / (c * n)
    head = nn.Linear(x.shape[1], num_classes).double()
    with torch.no_grad():
        head.weight.copy_(start.weight if start is not None else torch.zeros_like(head.weight))
        head.bias.copy_(start.bias if start is not None else torch.zeros_like(head.bias))
    optimizer = torch.optim.LBFGS(
        head.parameters(),
        lr=1.0,
        max_iter=HEAD_ITERATIONS_PER_ROUND,
        history_size=20,
        tolerance_grad=HEAD_TOLERANCE,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def objective():
        optimizer.zero_grad(set_to_none=True)
        loss = (weights * F.cross_entropy(head(x), labels, reduction="none")).sum() / n
        loss = loss + 0.5 * penalty * head.weight.pow(2).sum()
        loss.backward()
        return loss

    previous = math.inf
    for round_index in range(HEAD_MAX_ITERATIONS // HEAD_ITERATIONS_PER_ROUND):
        stop_point()
        optimizer.step(objective)
        loss = float(objective().detach())  # and its gradient, at the round's end (step returns its start's)
        if on_iteration is not None:
            on_iteration(round_index, loss, head)
        # objective() just ran backward, so every parameter has its gradient
        gradient = max(float(p.grad.abs().max()) for p in head.parameters() if p.grad is not None)
        if gradient <= HEAD_TOLERANCE or previous - loss <= 1e-12 * max(1.0, abs(loss)):
            break
        previous = loss
    return head.float()


def choose_head_c(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, balance: bool, groups: list[str] | None, seed: int
) -> tuple[float, dict, torch.Tensor]:
    """C for the logistic head, by cross-validation on the training photos: the C with the lowest
    cross-entropy on held-out folds (mean over folds; ties: the smaller C, the stronger prior). Returns
    (C, what was tried, on which folds, each photo's held-out logits at that C: NaN for a photo no usable
    fold held out; benchmarks/unknown_loso.py fits a temperature on them, and shows why pasture does not).

    Why cross-entropy and not accuracy: on the 8 photo sources (each held out in turn, C chosen by
    leave-one-source-out inside the other 7), choosing by held-out cross-entropy gave 92.7% mean balanced
    accuracy on the outer source, by held-out balanced accuracy 91.1% (accuracy on a few dozen photos
    ties often and jumps between the grid's ends)."""
    folds, how = held_out_folds(labels, groups, seed)
    losses: dict[float, list[float]] = {c: [] for c in HEAD_CS}
    held_logits = {c: torch.full((len(labels), num_classes), float("nan")) for c in HEAD_CS}
    usable = 0
    for held in folds:
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[held] = False
        if len(set(labels[keep].tolist())) < num_classes:
            continue  # training side lacks a class: this fold cannot say anything about C
        usable += 1
        train_x, train_y = features[keep], labels[keep]
        head = None
        for c in HEAD_CS:  # warm start along the path: each C starts from the previous solution
            head = fit_logistic_head(train_x, train_y, num_classes, c, balance, start=head)
            with torch.no_grad():
                held_logits[c][held] = head(features[held])
                losses[c].append(float(F.cross_entropy(held_logits[c][held], labels[held])))
    if usable == 0:
        return (
            DEFAULT_HEAD_C,
            {
                "folds": how,
                "usable_folds": 0,
                "chosen_c": DEFAULT_HEAD_C,
                "note": f"no usable fold; C = {DEFAULT_HEAD_C}",
            },
            held_logits[HEAD_CS[0]],
        )
    means = {c: sum(values) / len(values) for c, values in losses.items()}
    best = min(HEAD_CS, key=lambda c: (round(means[c], 9), c))
    return (
        best,
        {
            "folds": how,
            "usable_folds": usable,
            "chosen_c": best,
            "held_out_cross_entropy_by_c": {str(c): round(m, 4) for c, m in means.items()},
        },
        held_logits[best],
    )


def remembered_choice(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, balance: bool, groups: list[str] | None, seed: int
) -> dict:
    """choose_head_c's record, kept in the cache under everything it is computed from (the features'
    and labels' bytes, groups, seed, grid, solver): the same photos give the same choice, so a warm
    `pasture train` reads it (the search's 36 fits took 0.4-1 s of a 7 s run)."""
    digest = hashlib.sha256(
        repr((SEARCH_FORMAT, torch.__version__, HEAD_CS, HEAD_TOLERANCE, HEAD_MAX_ITERATIONS)).encode()
    )
    digest.update(repr((num_classes, balance, seed, groups)).encode())
    digest.update(features.contiguous().numpy().tobytes())
    digest.update(labels.contiguous().numpy().tobytes())
    return ContentCache("head-c", what="head-C cache").get(
        digest.hexdigest()[:24],
        lambda: choose_head_c(features, labels, num_classes, balance, groups, seed)[1],
        check=lambda value: isinstance(value, dict) and isinstance(value.get("chosen_c"), float),
    )


def fit_linear_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    head_c: float,
    balance_classes: bool,
    *,
    groups: list[str] | None = None,
    seed: int = 0,
    test_features: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None,
    on_epoch=None,
    extra: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[nn.Linear, list[dict], dict]:
    """The probe's head on features: C as given (`head_c`, a recipe's), or chosen by cross-validation
    when it is 0; classes weighted to balance with `balance_classes` (two numbers, not the recipe: the
    solver knows nothing of optimisers or epochs). Returns the head, one history record per L-BFGS round (loss, train accuracy, test
    accuracy when given) and how C was chosen.

    `extra` (features, labels, row weights), e.g. of GAN samples, join the final fit but not the choice
    of C: C is chosen on held-out folds of the real photos only, which is what it must do well on."""
    choice: dict = {"chosen_c": head_c, "folds": "none (head_c given)"}
    if head_c <= 0:
        choice = remembered_choice(features, labels, num_classes, balance_classes, groups, seed)
    c = choice["chosen_c"]
    history: list[dict] = []
    fit_features, fit_labels, row_weights = features, labels, None
    if extra is not None:  # the history's train accuracy stays that of the real photos
        fit_features, fit_labels = torch.cat([features, extra[0]]), torch.cat([labels, extra[1]])
        row_weights = torch.cat([torch.ones(len(labels)), extra[2]])

    def record(iteration, loss, head):
        with torch.no_grad():
            entry = {
                "epoch": iteration + 1,
                "train_loss": loss,
                "train_accuracy": float((head(features.double()).argmax(1) == labels).float().mean()),
            }
            if test_features is not None:
                entry["test_accuracy"] = float((head(test_features.double()).argmax(1) == test_labels).float().mean())
        history.append(entry)
        if on_epoch is not None:
            on_epoch(entry)

    head = fit_logistic_head(
        fit_features, fit_labels, num_classes, c, balance_classes, on_iteration=record, row_weights=row_weights
    )
    return head, history, choice
