"""Fit a new camera: a probe run adapted to a folder of unlabeled photos from it, and which of those photos
to label first.

The method, label spreading on the k-nearest-neighbour graph of the training and the target photos'
features (Zhou et al. 2004, "Learning with local and global consistency"): each photo's class is spread
along the graph from the labelled training photos (and any labelled target photos), so a new camera's
photos take the class of the photos they look like, first the target's own neighbours, then the
training photos; the target photos start from the original head's probabilities, so the graph corrects
the head where a target's neighbours disagree with it rather than replacing it; the head is then fitted
again on the training photos and the target photos with those labels. Why this and not the obvious self-training: on the default's features (issue 43, trained on
cowhorse-dev, cowhorse-sources as the target) self-training on the head's confident pseudo-labels made
the race-TV horses worse, 33% -> 5% (it confirms its own mistakes), while label spreading gave 97.1%
overall and race TV 100%. Methods that assume a class-balanced target (AdaBN, TENT) wash out the class
signal when a camera sees one class (a dairy farm's sees cows); label spreading assumes nothing about the
target's class shares.

A guard keeps the original when the adaptation looks wrong: when the adapted model disagrees with the
original on most target photos, or puts them all in one class while the original did not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pasture.classify.familiarity import k_center_greedy

NEIGHBOURS = 10  # k of the graph: the measurement (k=10) gave 97.1% on cowhorse-sources
ALPHA = 0.99  # how far labels spread along the graph against staying where they were given (Zhou et al.)
ITERATIONS = 100  # F <- alpha S F + (1 - alpha) Y: 0.99^100 = 0.37 of the start remains; the order settles long before
MOST = 0.5  # the guard: the adapted model may change at most this share of the original's labels
ONE_CLASS = 0.98  # the guard: a target put all (this share) in one class, when the original did not
ORIGINAL_SPREAD = 0.9  # ...i.e. the original's largest class share was below this


def knn_graph(features: torch.Tensor, k: int = NEIGHBOURS) -> torch.Tensor:
    """The symmetric normalised affinity D^-1/2 W D^-1/2 of the k-NN graph (cosine similarity, clipped at
    0) over the rows of `features`: dense, N x N (N up to a few thousand)."""
    normalised = F.normalize(features.float(), dim=1)
    similarity = (normalised @ normalised.T).clamp_min(0)
    similarity.fill_diagonal_(0)
    k = max(1, min(k, len(features) - 1))
    top = similarity.topk(k, dim=1)
    weights = torch.zeros_like(similarity).scatter_(1, top.indices, top.values)
    weights = torch.maximum(weights, weights.T)
    degree = weights.sum(1).clamp_min(1e-12).rsqrt()
    return degree[:, None] * weights * degree[None, :]


def label_spreading(
    features: torch.Tensor,
    known: torch.Tensor,
    num_classes: int,
    k: int = NEIGHBOURS,
    prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """Class scores (N x classes, rows summing to 1) of every row of `features`, spread along the k-NN
    graph from the rows whose `known` label is given (>= 0; -1 for unknown); with `prior` (N x classes),
    the unknown rows start from it instead of from nothing (the original head's probabilities)."""
    graph = knn_graph(features, k)
    start = torch.zeros(len(features), num_classes)
    if prior is not None:
        start = prior.float().clone()
    given = known >= 0
    start[given] = 0.0
    start[given.nonzero().flatten(), known[given]] = 1.0
    spread = start.clone()
    for _ in range(ITERATIONS):
        spread = ALPHA * (graph @ spread) + (1 - ALPHA) * start
    total = spread.sum(1, keepdim=True)
    uniform = torch.full_like(spread, 1.0 / num_classes)
    return torch.where(total > 0, spread / total.clamp_min(1e-12), uniform)


def spread_to_target(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    target_features: torch.Tensor,
    num_classes: int,
    labelled: dict[int, int] | None = None,
    head_probabilities: torch.Tensor | None = None,
) -> torch.Tensor:
    """Class scores of the target photos (N x classes): label spreading from the training photos and the
    `labelled` target photos (target index -> class) over the graph of both, the other target photos
    starting from `head_probabilities` (the original head's) when given.

    Why the head's start: on leave-one-source-out (benchmarks/adapt.py, half of each held-out source as
    the pool) spreading from nothing lost 1.5 points on average against the unadapted head, 10 on
    Animal-Pose and 6.7 on a one-class horse source, where the head trained on 7 sources was already
    right; starting from the head's probabilities lost 0.1 (the worst source -3.3, one photo of 30),
    and on cowhorse-sources as one new camera it kept race TV at 100% (97.5% overall against 98.3%)."""
    known = torch.cat([train_labels, torch.full((len(target_features),), -1, dtype=torch.long)])
    for index, label in (labelled or {}).items():
        known[len(train_labels) + index] = label
    every = torch.cat([train_features, target_features])
    prior = None
    if head_probabilities is not None:
        prior = torch.cat([torch.zeros(len(train_labels), num_classes), head_probabilities.float()])
    return label_spreading(every, known, num_classes, prior=prior)[len(train_labels) :]


LABELS_ONLY = "labels only"  # target_labels' fallback: the head refitted with the user's labelled photos alone


def target_labels(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    target_features: torch.Tensor,
    num_classes: int,
    labelled: dict[int, int],
    head_probabilities: torch.Tensor,
) -> tuple[torch.Tensor, str]:
    """(the class of each target photo the head is refitted with, -1 for a photo left out; how they were
    chosen): label spreading's (the labelled photos as given), unless the user's labelled photos show
    spreading to be wrong on this camera: when spreading without those labels gets fewer of them right
    than the original head does, only the labelled photos join ("labels only").

    Why: a camera that sees cows which look like the training set's horses (the breed-set cows, brown on
    grass) with horses beside them: the k-NN graph puts both with the horses (spreading 42.5% right, the
    head 92.5%), and with 2 labels the adaptation changed 45% of the labels, under the guard's 50%, and was
    kept: 90% -> 42.5% on the scored photos (benchmarks/adapt.py, pairs). The labelled photos are the one
    evidence of which is right."""

    def spread(given: dict[int, int] | None) -> torch.Tensor:
        scores = spread_to_target(train_features, train_labels, target_features, num_classes, given, head_probabilities)
        return scores.argmax(1)

    if not labelled:
        return spread(None), "spreading"
    indices, truth = torch.tensor(list(labelled)), torch.tensor(list(labelled.values()))
    spread_right = int((spread(None)[indices] == truth).sum())  # spreading without the labels, judged by them
    head_right = int((head_probabilities[indices].argmax(1) == truth).sum())
    if spread_right < head_right:
        only = torch.full((len(target_features),), -1, dtype=torch.long)
        only[indices] = truth
        return only, LABELS_ONLY
    chosen = spread(labelled)
    chosen[indices] = truth
    return chosen, "spreading"


def class_shares(labels: torch.Tensor, classes: list[str]) -> dict[str, float]:
    counts = torch.bincount(labels, minlength=len(classes)).float()
    return {name: float(count / max(1, len(labels))) for name, count in zip(classes, counts)}


def guard(original: torch.Tensor, adapted: torch.Tensor, classes: list[str]) -> tuple[str | None, dict]:
    """(why the adapted model is not to be kept, or None; what changed): the share of target photos whose
    label changed and the class shares before and after."""
    changed = float((original != adapted).float().mean()) if len(original) else 0.0
    before, after = class_shares(original, classes), class_shares(adapted, classes)
    report = {"changed": changed, "n": len(original), "shares_before": before, "shares_after": after}
    if changed > MOST:
        return f"it changes {changed:.0%} of the original's labels on these photos (more than {MOST:.0%})", report
    if max(after.values()) >= ONE_CLASS and max(before.values()) < ORIGINAL_SPREAD:
        top = max(after, key=after.__getitem__)
        return f"it puts {after[top]:.0%} of these photos in {top} while the original spread them", report
    return None, report


def ask_order(probabilities: torch.Tensor, features: torch.Tensor, k: int) -> list[int]:
    """Which `k` target photos to label first: the least certain (smallest margin between the two most
    likely classes), spread over the target (k-center greedy over the 4k least certain, starting from the
    least certain), so that ten labels do not go to ten frames of one scene."""
    top2 = probabilities.topk(min(2, probabilities.shape[1]), dim=1).values
    margin = top2[:, 0] - (top2[:, 1] if top2.shape[1] > 1 else 0)
    pool = margin.argsort()[: max(k, 4 * k)]
    normalised = F.normalize(features[pool].float(), dim=1)
    # farthest from those chosen, the less certain first among near-ties
    chosen = k_center_greedy(normalised, k, first=0, bonus=-1e-3 * margin[pool])
    return [int(pool[index]) for index in chosen]
