"""The doctor's checks on a labelled image set, each returning plain data (JSON-ready):

- near_duplicates: perceptual-hash pairs (imagehash's pHash), sorted into label conflicts, copies across
  the train/test split and copies inside one class;
- shortcut_probe: how well trivial statistics (pasture.doctor.imagestats) predict the class, cross-validated
  (scikit-learn), with the 95% interval and n, overall and per statistic family;
- group_check: which groups (photo sources) hold one class only, and how well trivial statistics
  predict the group.

Why these libraries: imagehash is the maintained implementation of the perceptual hashes the
near-duplicate literature uses; scikit-learn's cross_val_predict gives out-of-fold predictions with
stratified folds in one call, so no fold logic lives here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pasture.core.stats import wilson_interval
from pasture.doctor.extra import require_extra
from pasture.doctor.imagestats import FAMILIES

DUPLICATE_DISTANCE = 6  # of 64 pHash bits; recompressed/resized copies land at 0-4, unrelated photos ~32


def sklearn_parts():
    require_extra()
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return LogisticRegression, StratifiedKFold, cross_val_predict, make_pipeline, StandardScaler


# ----------------------------------------------------------------------------------------------
# Near-duplicates


def perceptual_hashes(images_uint8) -> np.ndarray:
    """uint8 N x 3 x S x S (torch or numpy) -> N uint64 pHashes (64 bits: 8 x 8 DCT signs)."""
    import imagehash
    from PIL import Image

    arrays = np.asarray(images_uint8).transpose(0, 2, 3, 1)
    hashes = np.zeros(len(arrays), dtype=np.uint64)
    for index, array in enumerate(arrays):
        bits = imagehash.phash(Image.fromarray(np.ascontiguousarray(array))).hash.flatten()
        hashes[index] = np.uint64(int("".join("1" if bit else "0" for bit in bits), 2))
    return hashes


def close_pairs(hashes: np.ndarray, max_distance: int, block: int = 1024) -> list[tuple[int, int, int]]:
    """(i, j, Hamming distance) for every pair i < j within max_distance, in blocks (bounded memory)."""
    pairs = []
    for start in range(0, len(hashes), block):
        rows = hashes[start : start + block]
        distances = np.bitwise_count(rows[:, None] ^ hashes[None, :])
        for offset, j in zip(*np.nonzero(distances <= max_distance)):
            i = start + int(offset)
            if i < int(j):
                pairs.append((i, int(j), int(distances[offset, j])))
    return sorted(pairs, key=lambda pair: (pair[2], pair[0], pair[1]))


def near_duplicates(
    hashes: np.ndarray, labels: list[int], splits: list[str], classes: list[str], max_distance: int = DUPLICATE_DISTANCE
) -> dict:
    """Pairs of near-identical images, each with its kind:

    - "label conflict": the two copies carry different classes (one label is wrong, or the photo is
      ambiguous), wherever they are;
    - "train/test": same class, one copy in each split: the model is tested on a photo it trained on;
    - "within split": same class, same split: harmless for the score, but the set is smaller than it looks.

    `inflation`: test images with a same-class copy in train, the most the test accuracy could owe to them.
    """
    pairs: list[dict[str, Any]] = []
    for i, j, distance in close_pairs(hashes, max_distance):
        if labels[i] != labels[j]:
            kind = "label conflict"
        elif splits[i] != splits[j]:
            kind = "train/test"
        else:
            kind = "within split"
        pairs.append({"a": i, "b": j, "distance": distance, "kind": kind})
    test_with_copy = {
        pair["a"] if splits[pair["a"]] == "test" else pair["b"] for pair in pairs if pair["kind"] == "train/test"
    }
    n_test = sum(1 for split in splits if split == "test")
    counts = {
        kind: sum(1 for pair in pairs if pair["kind"] == kind)
        for kind in ("label conflict", "train/test", "within split")
    }
    return {
        "max_distance": max_distance,
        "pairs": pairs,
        "counts": counts,
        "images_involved": len({index for pair in pairs for index in (pair["a"], pair["b"])}),
        "inflation": {
            "test_images_with_train_copy": len(test_with_copy),
            "n_test": n_test,
            "at_most": len(test_with_copy) / n_test if n_test else 0.0,
        },
    }


# ----------------------------------------------------------------------------------------------
# Shortcut probe


def folds_for(targets: np.ndarray, wanted: int = 5) -> int:
    return int(min(wanted, np.bincount(np.unique(targets, return_inverse=True)[1]).min()))


PERMUTATIONS = 200  # the smallest p-value 200 label shuffles can give is 1/201, below FLAG_P
FLAG_P = 0.01
FLAG_MARGIN = 0.10  # "far above chance": at least 10 points, so a real but useless edge is not a finding


def cross_validated(
    features: np.ndarray, targets: np.ndarray, seed: int, folds: int = 5, permutations: int = 0
) -> dict | None:
    """Out-of-fold accuracy of a logistic regression on standardised features, with Wilson 95% CI and
    n, balanced accuracy and chance (the majority share). None when a target has under 2 images.

    With `permutations`, also the permutation-test p-value (scikit-learn's permutation_test_score: the
    same cross-validation on shuffled targets). A Wilson interval alone treats the n out-of-fold
    predictions as independent; they are not (each fold's model is shared), and with dozens of
    features on a few dozen photos a balanced set came out "above chance" (63%, CI 51-74%, n=60)."""
    LogisticRegression, StratifiedKFold, cross_val_predict, make_pipeline, StandardScaler = sklearn_parts()
    from sklearn.model_selection import permutation_test_score

    folds = folds_for(targets, folds)
    if folds < 2 or len(np.unique(targets)) < 2:
        return None
    features = np.nan_to_num(features)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    predicted = cross_val_predict(model, features, targets, cv=splitter)
    correct = int((predicted == targets).sum())
    n = len(targets)
    recalls = [float((predicted[targets == value] == value).mean()) for value in np.unique(targets)]
    chance = float(np.bincount(np.unique(targets, return_inverse=True)[1]).max() / n)
    low, high = wilson_interval(correct, n)
    row = {
        "accuracy": correct / n,
        "ci95": [low, high],
        "n": n,
        "balanced_accuracy": float(np.mean(recalls)),
        "chance": chance,
        "folds": folds,
    }
    if permutations:
        _, _, p_value = permutation_test_score(
            model, features, targets, cv=splitter, n_permutations=permutations, random_state=seed
        )
        row["p_value"] = float(p_value)
        row["above_chance"] = bool(p_value < FLAG_P and correct / n >= chance + FLAG_MARGIN)
    return row


def shortcut_probe(families: dict[str, np.ndarray], labels: np.ndarray, seed: int = 0) -> dict:
    """How well trivial statistics predict the class: all families together, and each alone.

    `flagged` when the combined probe is far above chance (permutation p < FLAG_P and at least
    FLAG_MARGIN over the majority share): a model could then score without looking at the subject.
    `strong` when it reaches 80%."""
    combined = cross_validated(
        np.concatenate([families[name] for name in FAMILIES], 1), labels, seed, permutations=PERMUTATIONS
    )
    per_family = {name: cross_validated(families[name], labels, seed) for name in FAMILIES}
    flagged = combined is not None and combined["above_chance"]
    return {
        "all": combined,
        "families": per_family,
        "descriptions": FAMILIES,
        "flagged": flagged,
        "strong": combined is not None and flagged and combined["accuracy"] >= 0.8,
        "best_family": max(
            (name for name, row in per_family.items() if row is not None),
            key=lambda name: (per_family[name] or {})["accuracy"],
            default=None,
        ),
    }


# ----------------------------------------------------------------------------------------------
# Groups (photo sources)


def group_check(
    families: dict[str, np.ndarray], labels: np.ndarray, groups: list[str], classes: list[str], seed: int = 0
) -> dict:
    """Class counts per group, the groups that hold a single class (there, the source alone gives the
    label), and how well trivial statistics predict the group."""
    table = {}
    for group in sorted(set(groups)):
        members = labels[np.array([g == group for g in groups])]
        table[group] = {name: int((members == index).sum()) for index, name in enumerate(classes)}
    single = {
        group: next(name for name, count in row.items() if count)
        for group, row in table.items()
        if sum(1 for count in row.values() if count) == 1
    }
    in_single = sum(sum(table[group].values()) for group in single)
    targets = np.unique(np.array(groups), return_inverse=True)[1]
    predictable = (
        cross_validated(
            np.concatenate([families[name] for name in FAMILIES], 1), targets, seed, permutations=PERMUTATIONS
        )
        if len(table) > 1
        else None
    )
    return {
        "table": table,
        "single_class_groups": single,
        "images_in_single_class_groups": in_single,
        "n": len(groups),
        "group_from_statistics": predictable,
    }
