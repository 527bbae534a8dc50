"""Linear probe on a frozen pretrained backbone: the training photos' features (classify.features, cached)
and a logistic head solved to convergence on them (classify.logistic); an ensemble's members on
bootstrap resamples; the familiarity bank of the training photos; the run's checkpoint and history.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from pasture.classify.backbones import backbone_key, graph_file
from pasture.classify.familiarity import Familiarity
from pasture.classify.features import FeatureCache, FrozenBackbone, feature_cache
from pasture.classify.logistic import fit_linear_head
from pasture.classify.probe_file import write_probe_file
from pasture.classify.recipes import Recipe
from pasture.classify.trained import MEMBER_SEED_STRIDE, TrainResult, build_members, member_checkpoint
from pasture.core.runtime import progress_bar, seed_everything
from pasture.data import Dataset, ImageSet
from pasture.models import Classifier, timm_net


def _copy_head(model: nn.Module, head: nn.Linear) -> None:
    classifier = timm_net(model).get_classifier()
    with torch.no_grad():
        classifier.load_state_dict(head.state_dict())  # weight and bias, copied into the model's own tensors


def _probe_features(
    model: Classifier | FrozenBackbone, dataset: Dataset, recipe: Recipe
) -> tuple[FeatureCache, torch.Tensor]:
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
        features,
        dataset.train.labels,
        len(dataset.classes),
        recipe.head_c,
        recipe.balance_classes,
        groups=dataset.train.groups,
        seed=seed,
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
    backbone = FrozenBackbone(recipe, len(dataset.classes), device)
    cache, features = _probe_features(backbone, dataset, recipe)
    labels = dataset.train.labels
    test_features = cache.features(backbone, dataset.test.images) if dataset.test is not None else None
    extra = _synthetic_rows(cache, backbone, synthetic, synthetic_ratio, len(labels))
    fitted = _fit_members(backbone, features, labels, dataset, recipe, seed, test_features, extra, quiet)
    member_states, history, choice, train_scored, test_scored = fitted
    familiarity = _familiarity_bank(dataset, features, seed, extra if familiar_extra else None, synthetic)
    member_checkpoint(run_dir).save(member_states, history)  # the one checkpoint format of classify.fit
    if run_dir is not None:
        familiarity.save(run_dir)
        _write_probe_file(run_dir, recipe, member_states, familiarity)
    # The head on the cached features gives the probabilities the whole model would (an ensemble's are
    # the mean over members, as Ensemble averages them); with TTA the model must see the shifted views.
    from_features = not recipe.tta
    return TrainResult(
        built=lambda: build_members(recipe, len(dataset.classes), member_states, device),
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


def _write_probe_file(run_dir: str | Path, recipe: Recipe, member_states: list[dict], familiarity: Familiarity) -> None:
    """RUN/probe.npz (classify.probe_file), after the checkpoint it names, when the backbone's ONNX graph
    is in the cache: `pasture predict RUN` then scores the run without torch. Test-time augmentation needs
    the model's shifted views: no file."""
    key = backbone_key(recipe)
    graph = graph_file(key, recipe.image_size) if key is not None and not recipe.tta else None
    if graph is None:
        return
    write_probe_file(
        run_dir,
        torch.stack([state["net.classifier.weight"] for state in member_states]).float().numpy(),
        torch.stack([state["net.classifier.bias"] for state in member_states]).float().numpy(),
        {
            "bank": familiarity.bank.numpy(),
            "k": familiarity.k,
            "held_out": familiarity.held_out.numpy(),
            "threshold": familiarity.threshold,
        },
        graph,
    )


def _synthetic_rows(
    cache: FeatureCache, backbone: FrozenBackbone, synthetic: ImageSet | None, ratio: float, n_real: int
):
    """(features, labels, row weights) of the synthetic images, or None: each synthetic row weighs
    ratio/(1 - ratio) x n_real / n_synthetic, so that together they carry `ratio` of the total."""
    if synthetic is None or not len(synthetic) or ratio <= 0:
        return None
    per_row = ratio / (1 - ratio) * n_real / len(synthetic)
    return cache.features(backbone, synthetic.images), synthetic.labels, torch.full((len(synthetic),), per_row)


def _fit_members(backbone, features, labels, dataset: Dataset, recipe: Recipe, seed: int, test_features, extra, quiet):
    """Each ensemble member's head (on a seeded bootstrap resample when there are several, with the C
    the first one chose): (member state dicts, history, the choice of C, each member's probabilities on
    the training photos and on the test photos)."""
    bar = progress_bar(recipe.ensemble, 0, quiet, desc="probe head")
    history: list[dict] = []
    member_states = []
    choice: dict = {}
    groups = dataset.train.groups
    test_labels = dataset.test.labels if dataset.test is not None else None
    train_scored: list[torch.Tensor] = []
    test_scored: list[torch.Tensor] = []
    try:
        for member in range(recipe.ensemble):
            rows = torch.arange(len(labels))
            head_c = recipe.head_c
            if recipe.ensemble > 1:
                generator = seed_everything(seed + MEMBER_SEED_STRIDE * member)
                rows = torch.randint(len(labels), (len(labels),), generator=generator)
                if member > 0:
                    head_c = choice["chosen_c"]  # chosen once, on the first member's resample
            head, member_history, member_choice = fit_linear_head(
                features[rows],
                labels[rows],
                len(dataset.classes),
                head_c,
                recipe.balance_classes,
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
            member_states.append(backbone.member_state(head))
            bar.set_postfix({"C": choice["chosen_c"]}, refresh=False)
            bar.update(1)
    finally:
        bar.close()
    return member_states, history, choice, train_scored, test_scored


def _familiarity_bank(dataset: Dataset, features, seed: int, new_photos, synthetic: ImageSet | None) -> Familiarity:
    """The training photos' features, kept to say how familiar a new photo is (classify.familiarity): the
    real photos only, never GAN samples; `new_photos` (an adapted run's new camera, real photos, as
    _synthetic_rows made them) join them."""
    bank_features, bank_labels, bank_images = features, dataset.train.labels, dataset.train.images
    bank_files = [str(Path(name).resolve()) for name in dataset.train.files]
    groups = dataset.train.groups
    if new_photos is not None and synthetic is not None:
        bank_features, bank_labels = torch.cat([features, new_photos[0]]), torch.cat([bank_labels, new_photos[1]])
        bank_images = torch.cat([dataset.train.images, synthetic.images])
        bank_files += [str(Path(name).resolve()) for name in synthetic.files]
        groups = groups + ["new photos"] * len(synthetic) if groups is not None else None
    return Familiarity.fit(bank_features, bank_labels, seed, bank_files, bank_images, groups=groups)
