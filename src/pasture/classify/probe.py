"""Linear probe on a frozen pretrained backbone: features computed once per image and cached on disk.

The cache holds one small file per (backbone, weights, input size, image content): a changed image
has another content hash and is recomputed; an unchanged one is read back, across runs and seeds.
Location: $PASTURE_CACHE_DIR, else ~/.cache/pasture. The head is a logistic regression solved to
convergence on those features (seconds), its L2 strength chosen by cross-validation: leave one photo
source out when the sources are known (--groups), since that is how a user's photos will differ.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pasture.classify.backbones import backbone_features, backbone_key
from pasture.classify.familiarity import Familiarity
from pasture.classify.recipes import Recipe, class_weights, with_overrides
from pasture.classify.trained import CHECKPOINT_FORMAT, MEMBER_SEED_STRIDE, TrainResult, build_members
from pasture.core.cache import ContentCache
from pasture.core.runs import atomic_torch_save, write_jsonl
from pasture.core.runtime import progress_bar, seed_everything, stop_point
from pasture.data import Dataset, ImageSet
from pasture.data.splits import held_out_folds
from pasture.models import Classifier, create_model, timm_net

FEATURE_FORMAT = "v1"  # bump when feature extraction changes, so old cache entries are not reused


class FeatureCache:
    """Per-image feature files under cache_root()/features/<backbone key>/<image hash>.pt (core.cache)."""

    def __init__(self, backbone_key: str, root: Path | None = None):
        self.backbone_key = backbone_key
        key = hashlib.sha256(f"{FEATURE_FORMAT}|{backbone_key}".encode()).hexdigest()[:20]
        self.cache = ContentCache(f"features/{key}", root=root, what="feature-cache")
        self.folder = self.cache.folder
        self.computed = 0
        self.reused = 0

    @staticmethod
    def image_key(image_uint8: torch.Tensor) -> str:
        return hashlib.sha256(image_uint8.contiguous().numpy().tobytes()).hexdigest()

    def features(self, model: Classifier, images_uint8: torch.Tensor) -> torch.Tensor:
        keys = [self.image_key(image) for image in images_uint8]
        found: dict[int, torch.Tensor] = {}
        for index, key in enumerate(keys):
            stored = self.cache.read(key, lambda value: isinstance(value, torch.Tensor) and value.dim() == 1)
            if stored is not None:
                found[index] = stored
        missing = [index for index in range(len(keys)) if index not in found]
        if missing:
            fresh = backbone_features(model, images_uint8[missing], key=self.backbone_key)
            for index, feature in zip(missing, fresh):
                self.cache.write(keys[index], feature.clone())
                found[index] = feature
        self.computed += len(missing)
        self.reused += len(keys) - len(missing)
        return torch.stack([found[index] for index in range(len(keys))])


def feature_cache(recipe: Recipe) -> FeatureCache:
    """The feature cache of a recipe's frozen backbone (model, weights, input size): one per backbone,
    shared by the probe, LP-FT and the doctor's label check."""
    return FeatureCache(backbone_key(with_overrides(recipe, pretrained="probe")) or "")


# The head's regularisation strengths tried by cross-validation (scikit-learn's C: larger = weaker L2).
# On leave-one-source-out over the 8 photo sources every C from 0.01 to 10 scored within 2 points
# (issue 25's replication), so a coarse grid is enough; what matters is solving to convergence.
HEAD_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
HEAD_MAX_ITERATIONS = 500
HEAD_ITERATIONS_PER_ROUND = 10  # between checks for a stop request (and history records)
HEAD_TOLERANCE = 1e-5  # largest gradient entry of the (n-normalised) objective at convergence
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


def fit_linear_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    recipe: Recipe,
    *,
    groups: list[str] | None = None,
    seed: int = 0,
    test_features: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None,
    on_epoch=None,
    extra: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[nn.Linear, list[dict], dict]:
    """The probe's head on features: C from the recipe, or chosen by cross-validation when the recipe's
    head_c is 0. Returns the head, one history record per L-BFGS round (loss, train accuracy, test
    accuracy when given) and how C was chosen.

    `extra` (features, labels, row weights), e.g. of GAN samples, join the final fit but not the choice
    of C: C is chosen on held-out folds of the real photos only, which is what it must do well on."""
    if recipe.head_c > 0:
        c, choice = recipe.head_c, {"chosen_c": recipe.head_c, "folds": "none (head_c given)"}
    else:
        c, choice, _ = choose_head_c(features, labels, num_classes, recipe.balance_classes, groups, seed)
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
        fit_features, fit_labels, num_classes, c, recipe.balance_classes, on_iteration=record, row_weights=row_weights
    )
    return head, history, choice


def _copy_head(model: nn.Module, head: nn.Linear) -> None:
    classifier = timm_net(model).get_classifier()
    with torch.no_grad():
        classifier.load_state_dict(head.state_dict())  # weight and bias, copied into the model's own tensors


def _probe_features(model: Classifier, dataset: Dataset, recipe: Recipe) -> tuple[FeatureCache, torch.Tensor]:
    """Cached features of the training images. No mirror images: adding their features as training rows
    changed nothing on unseen sources (Lite0: 93.4% against 94.0% without, C = 0.1; Lite0 + Lite2:
    95.2% against 95.0%) and cost a third of a cold run's time."""
    cache = feature_cache(recipe)
    return cache, cache.features(model, dataset.train.images)


def init_head_from_probe(model: Classifier, dataset: Dataset, recipe: Recipe, seed: int) -> dict:
    """LP-FT (Kumar et al. 2022): before fine-tuning, fit the head on frozen features (the probe's
    converged logistic head), so the first gradient steps do not push random-head noise into the
    pretrained backbone. Returns how the head's C was chosen."""
    _, features = _probe_features(model, dataset, recipe)
    head, _, choice = fit_linear_head(
        features, dataset.train.labels, len(dataset.classes), recipe, groups=dataset.train.groups, seed=seed
    )
    _copy_head(model, head)
    return choice


def train_probe(
    dataset: Dataset,
    recipe: Recipe,
    seed: int,
    run_dir: str | Path | None = None,
    quiet: bool = True,
    device: str | torch.device = "cpu",
    synthetic: ImageSet | None = None,
    synthetic_ratio: float = 0.0,
    familiar_extra: bool = False,
) -> TrainResult:
    """Fit the logistic head on frozen, cached backbone features; the backbone runs on `device`, the
    head (a few thousand weights) on the CPU. The head is convex and solved to convergence, so it does
    not depend on the seed; an ensemble's members are fitted on bootstrap resamples of the photos
    (seeded), with the C chosen once, on the first member's resample, and kept for the others.

    `synthetic` images (GAN samples) become extra rows of the head's fit, weighted so that they carry
    `synthetic_ratio` of the total weight (as they would fill that share of each batch of a network
    trained on images); C is still chosen on the real photos alone. With `familiar_extra` (they are real
    photos: a new camera's, labelled by `pasture adapt`), they join the familiarity bank too."""
    started = time.perf_counter()
    backbone = create_model(
        recipe.model, len(dataset.classes), recipe.image_size, weights=recipe.weights or "imagenet"
    ).to(device)
    cache, features = _probe_features(backbone, dataset, recipe)
    labels = dataset.train.labels
    test_features = cache.features(backbone, dataset.test.images) if dataset.test is not None else None
    test_labels = dataset.test.labels if dataset.test is not None else None
    extra = None
    if synthetic is not None and len(synthetic) and synthetic_ratio > 0:
        # each synthetic row weighs ratio/(1 - ratio) x n_real / n_synthetic: together, `ratio` of the total
        per_row = synthetic_ratio / (1 - synthetic_ratio) * len(labels) / len(synthetic)
        extra = (
            cache.features(backbone, synthetic.images),
            synthetic.labels,
            torch.full((len(synthetic),), per_row),
        )
    bar = progress_bar(recipe.ensemble, 0, quiet, desc="probe head")
    history: list[dict] = []
    member_states = []
    choice: dict = {}
    groups = dataset.train.groups
    train_scored: list[torch.Tensor] = []  # each member's probabilities on the training photos
    test_scored: list[torch.Tensor] = []  # and on the test photos, when there are test features
    try:
        for member in range(recipe.ensemble):
            rows = torch.arange(len(labels))
            member_recipe = recipe
            if recipe.ensemble > 1:
                generator = seed_everything(seed + MEMBER_SEED_STRIDE * member)
                rows = torch.randint(len(labels), (len(labels),), generator=generator)
                if member > 0:
                    member_recipe = with_overrides(recipe, head_c=choice["chosen_c"])
            head, member_history, member_choice = fit_linear_head(
                features[rows],
                labels[rows],
                len(dataset.classes),
                member_recipe,
                groups=[groups[i] for i in rows.tolist()] if groups is not None else None,
                seed=seed,
                test_features=test_features,
                test_labels=test_labels,
                extra=extra,
            )
            choice = choice or member_choice
            for record in member_history:
                if recipe.ensemble > 1:
                    record["member"] = member + 1
            history.extend(member_history)
            with torch.no_grad():
                train_scored.append(torch.softmax(head(features), 1))
                if test_features is not None:
                    test_scored.append(torch.softmax(head(test_features), 1))
            _copy_head(backbone, head)
            member_states.append({key: value.detach().cpu().clone() for key, value in backbone.state_dict().items()})
            bar.set_postfix({"C": choice["chosen_c"]}, refresh=False)
            bar.update(1)
    finally:
        bar.close()
    # The training photos' features, kept to say how familiar a new photo is (classify.familiarity): the
    # real photos only, never GAN samples (an adapted run's new-camera photos are real: they join).
    bank_features, bank_labels, bank_images = features, labels, dataset.train.images
    bank_files = [str(Path(name).resolve()) for name in dataset.train.files]
    groups = dataset.train.groups
    if familiar_extra and extra is not None and synthetic is not None:  # an adapted run knows its new camera
        bank_features, bank_labels = torch.cat([features, extra[0]]), torch.cat([labels, extra[1]])
        bank_images = torch.cat([dataset.train.images, synthetic.images])
        bank_files += [str(Path(name).resolve()) for name in synthetic.files]
        groups = groups + ["new photos"] * len(synthetic) if groups is not None else None
    familiarity = Familiarity.fit(bank_features, bank_labels, seed, bank_files, bank_images, groups=groups)
    if run_dir is not None:
        atomic_torch_save(
            {"format": CHECKPOINT_FORMAT, "members": member_states, "history": history}, Path(run_dir) / "checkpoint.pt"
        )
        write_jsonl(Path(run_dir) / "history.jsonl", history)
        familiarity.save(run_dir)
    # The head on the cached features gives the probabilities the whole model would (an ensemble's are
    # the mean over members, as Ensemble averages them); with TTA the model must see the shifted views.
    from_features = not recipe.tta
    return TrainResult(
        model=build_members(recipe, len(dataset.classes), member_states, device),
        history=history,
        seconds=time.perf_counter() - started,
        notes={
            "features_computed": cache.computed,
            "features_reused": cache.reused,
            "head": choice,
            "familiarity": familiarity.summary(),
        },
        train_probabilities=torch.stack(train_scored).mean(0) if from_features else None,
        test_probabilities=torch.stack(test_scored).mean(0) if from_features and test_scored else None,
    )
