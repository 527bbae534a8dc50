"""How familiar a photo is to a run: the distance of its backbone features to the training photos'
(k-th nearest neighbour, cosine; Sun et al. 2022, "Out-of-distribution detection with deep nearest
neighbors"), read as the share of held-out training photos that are at least as far from the rest.

Why a distance and not the head's confidence: the probe calls a sheep "cow" with probability >= 0.9 as
often as not (issue 41), because its two classes split the whole feature space; how far a photo lies
from every photo it was taught on does not depend on that split.

The threshold is chosen on the training photos alone: each is held out in turn (stratified folds), its
distance to the others measured, and `kept` (95%) of those held-out distances fall under the threshold.
A new photo's familiarity is the share of held-out training photos that are farther from the rest than
it is from the bank: 0.02 means stranger than 98% of them; it is `familiar` when its distance is within
the threshold. Torch-only arithmetic on features the probe already computes.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from pasture.classify.calibration import auroc, proportion
from pasture.core.imagefile import image_files_in
from pasture.core.runs import atomic_torch_save, load_checkpoint
from pasture.data.layouts import decode_files
from pasture.data.splits import held_out_folds

FAMILIARITY_FILE = "familiarity.pt"
FORMAT = 1
NEIGHBOURS = 5  # k: the measurement (k=5, cosine) flagged 100% of dogs and cats, 88% of sheep
KEPT = 0.95  # the share of held-out training photos called familiar: the threshold's definition


THUMBNAIL = 96  # px: the nearest training photos as the run keeps them (about 3 KB each as JPEG)


def jpeg_thumbnail(image_uint8: torch.Tensor) -> torch.Tensor:
    """A decoded photo (3 x S x S uint8) as the bytes of a THUMBNAIL px JPEG, in a uint8 tensor (what
    torch.load(weights_only=True) reads back)."""
    picture = Image.fromarray(image_uint8.permute(1, 2, 0).numpy())
    picture.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


# Photos a class keeps in the bank: 2,000 x 2,560 float16 features (the default's) = 10.2 MB. Measured on
# 10,000 photos of 2 classes (random 2,688-d features, 2 threads): the coresets, the held-out folds and the
# threshold took 4.5 s, and the bank is 4,000 photos instead of 10,000 (20.5 MB instead of 51.2 at 2,560).
CORESET_PER_CLASS = 2000


def k_center_greedy(
    points: torch.Tensor, count: int, first: int | None = None, bonus: torch.Tensor | None = None
) -> list[int]:
    """`count` row indices of `points` (L2-normalised), in the order chosen, so that every row lies close
    to one of them: each step adds the row farthest (cosine) from those chosen, plus its `bonus` when given
    (a small tie-break), Sener and Savarese 2018. Deterministic: it starts from row `first`, else from the
    row nearest the mean."""
    if first is None:
        first = int((points @ F.normalize(points.mean(0), dim=0)).argmax())
    chosen = [first]
    nearest = 1.0 - points @ points[first]
    while len(chosen) < min(count, len(points)):
        pick = int((nearest + bonus).argmax() if bonus is not None else nearest.argmax())
        chosen.append(pick)
        nearest = torch.minimum(nearest, 1.0 - points @ points[pick])
    return chosen


def coreset_rows(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """The rows the bank keeps when a class has more than CORESET_PER_CLASS photos (a k-center coreset of
    each such class, every photo of the others), or None when every class is small enough."""
    counts = torch.bincount(labels)
    if int(counts.max()) <= CORESET_PER_CLASS:
        return None
    normalised = F.normalize(features.float(), dim=1)
    rows = []
    for label in range(len(counts)):
        members = (labels == label).nonzero().flatten()
        if len(members) > CORESET_PER_CLASS:
            members = members[torch.tensor(k_center_greedy(normalised[members], CORESET_PER_CLASS))]
        rows.append(members)
    return torch.cat(rows).sort().values


def knn_distance(bank: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """1 - cosine similarity to the k-th most similar row of `bank` (both L2-normalised), per query."""
    k = max(1, min(k, len(bank)))
    similarities = queries.float() @ bank.float().T
    return 1.0 - similarities.topk(k, dim=1).values[:, -1]


def held_out_distances(
    features: torch.Tensor, labels: torch.Tensor, k: int, seed: int, groups: list[str] | None = None
) -> tuple[torch.Tensor, str]:
    """Each training photo's k-NN distance to the others when its fold is held out: one photo source
    (group) at a time when `groups` name 2 or more, as new photos will come from sources the bank has not
    seen; else stratified folds (5, or fewer for a small class; leave-one-out when a class has one photo)."""
    normalised = F.normalize(features.float(), dim=1)
    held, how = held_out_folds(labels, groups, seed)
    if not held:  # a class of one photo: each photo held out alone
        held, how = [torch.tensor([index]) for index in range(len(labels))], "leave-one-out"
    distances = torch.empty(len(labels))
    for fold in held:
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[fold] = False
        distances[fold] = knn_distance(normalised[keep], normalised[fold], k)
    return distances, how


@dataclass(frozen=True)
class Familiarity:
    """What a run keeps to say how familiar a photo is: the bank of its training photos' normalised
    features (float16), k, the sorted held-out distances and the threshold that keeps `kept` of them;
    and, to show the nearest training photos, their files and classes (None in banks saved before)."""

    bank: torch.Tensor
    k: int
    held_out: torch.Tensor
    threshold: float
    kept: float
    folds: str
    files: list[str] | None = None
    labels: torch.Tensor | None = None
    thumbnails: list[torch.Tensor] | None = None  # JPEG bytes (uint8) of each training photo, THUMBNAIL px

    @classmethod
    def fit(
        cls,
        features: torch.Tensor,
        labels: torch.Tensor,
        seed: int = 0,
        files: list[str] | None = None,
        images_uint8: torch.Tensor | None = None,
        groups: list[str] | None = None,
    ) -> Familiarity:
        """The bank of `features`, the threshold from held-out folds, and with `files` and `images_uint8`
        (the training photos as decoded), what shows the nearest photos: their names and small JPEG
        thumbnails, so a run shows them after its photos have moved (the app deletes a teach's copies).
        With `groups` (photo sources), the threshold is chosen with each source held out in turn."""
        kept_rows = coreset_rows(features, labels)
        if kept_rows is not None:  # a large class: the bank keeps a k-center coreset of it, and so does all below
            features, labels = features[kept_rows], labels[kept_rows]
            files = [files[i] for i in kept_rows.tolist()] if files is not None else None
            images_uint8 = images_uint8[kept_rows] if images_uint8 is not None else None
            groups = [groups[i] for i in kept_rows.tolist()] if groups is not None else None
        distances, how = held_out_distances(features, labels, NEIGHBOURS, seed, groups)
        ordered = distances.sort().values
        # the smallest distance within which at least KEPT of them lie (an interpolated quantile kept 15 of
        # 16 photos, 94%, under a "95%" threshold)
        threshold = float(ordered[min(len(ordered) - 1, max(0, math.ceil(KEPT * len(ordered)) - 1))])
        bank = F.normalize(features.float(), dim=1).half()
        thumbnails = [jpeg_thumbnail(image) for image in images_uint8] if images_uint8 is not None else None
        return cls(bank, NEIGHBOURS, ordered, threshold, KEPT, how, files, labels.clone(), thumbnails)

    def score(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """For each row of `features` (un-normalised backbone features): its distance, its familiarity
        (the share of held-out training photos at least as far) and whether it is familiar."""
        distance = knn_distance(self.bank, F.normalize(features.float(), dim=1), self.k)
        farther = len(self.held_out) - torch.searchsorted(self.held_out, distance, right=False)
        return {
            "distance": distance,
            "familiarity": farther.float() / max(1, len(self.held_out)),
            "familiar": distance <= self.threshold,
        }

    def nearest(self, features: torch.Tensor, count: int = 3) -> list[list[dict]]:
        """For each row of `features`: its `count` nearest training photos, nearest first, as {index,
        file, label (class index), distance, thumbnail (JPEG bytes)}; empty lists for a bank that keeps
        no files."""
        if self.files is None or self.labels is None or self.thumbnails is None:
            return [[] for _ in range(len(features))]
        similarities = F.normalize(features.float(), dim=1) @ self.bank.float().T
        top = similarities.topk(min(count, len(self.bank)), dim=1)
        return [
            [
                {
                    "index": int(i),
                    "file": self.files[int(i)],
                    "label": int(self.labels[int(i)]),
                    "distance": 1.0 - float(v),
                    "thumbnail": self.thumbnails[int(i)].numpy().tobytes(),
                }
                for v, i in zip(values, indices)
            ]
            for values, indices in zip(top.values, top.indices)
        ]

    def summary(self) -> dict:
        """What the run's record and model card say about it."""
        return {
            "bank_photos": len(self.bank),
            "coreset": f"k-center greedy, at most {CORESET_PER_CLASS} photos a class",
            "method": f"k-nearest-neighbour cosine distance to the {len(self.bank)} training photos (k={self.k})",
            "threshold": self.threshold,
            "kept": self.kept,
            "chosen_on": f"the training photos, each held out ({self.folds})",
            "bank_bytes": self.bank.numel() * self.bank.element_size(),
        }

    def save(self, run: str | os.PathLike) -> None:
        atomic_torch_save(
            {
                "format": FORMAT,
                "bank": self.bank,
                "k": self.k,
                "held_out": self.held_out,
                "threshold": self.threshold,
                "kept": self.kept,
                "folds": self.folds,
                "files": self.files,
                "labels": self.labels,
                "thumbnails": self.thumbnails,
            },
            Path(run) / FAMILIARITY_FILE,
        )

    @classmethod
    def load(cls, run: str | os.PathLike) -> Familiarity | None:
        """The run's Familiarity, or None when it has none (runs of other recipes, runs made before it)."""
        path = Path(run) / FAMILIARITY_FILE
        if not path.is_file():
            return None
        stored = load_checkpoint(path)
        return cls(
            stored["bank"],
            int(stored["k"]),
            stored["held_out"],
            float(stored["threshold"]),
            float(stored["kept"]),
            str(stored["folds"]),
            [str(name) for name in stored["files"]] if stored.get("files") is not None else None,
            stored.get("labels"),
            stored.get("thumbnails"),
        )


def familiarity_report(
    found: dict[str, torch.Tensor], correct: torch.Tensor, labels: torch.Tensor, classes: list[str], groups
) -> dict:
    """What `evaluate` says of the familiarity on labelled photos: the share flagged unfamiliar (overall,
    per class and per group), and the accuracy on the familiar and on the unfamiliar photos, each with its
    interval and n: flagged photos should be the ones the model gets wrong more often."""
    familiar = found["familiar"]
    report = {
        "flagged": proportion(~familiar),
        "accuracy_familiar": proportion(correct[familiar]),
        "accuracy_unfamiliar": proportion(correct[~familiar]),
        "flagged_per_class": {
            name: proportion(~familiar[labels == index])
            for index, name in enumerate(classes)
            if (labels == index).any()
        },
    }
    if groups is not None:
        report["flagged_per_group"] = {
            group: proportion(~familiar[torch.tensor([name == group for name in groups])])
            for group in sorted(set(groups))
        }
    return report


def others_report(
    loaded_scores, image_size: int, others: str | os.PathLike, known_found: dict, known_probabilities: torch.Tensor
) -> dict:
    """Photos of none of the classes (`others`, any layout): the share caught (flagged unfamiliar), and how
    well the familiarity and, for comparison, the head's top probability tell them from the labelled photos
    (AUROC). `loaded_scores` is trained.LoadedRun.scores."""
    files = image_files_in([others])
    probabilities, found = loaded_scores(decode_files(files, image_size))
    return {
        "folder": str(others),
        "caught": proportion(~found["familiar"]),
        "auroc_familiarity": auroc(found["distance"], known_found["distance"]),
        "auroc_max_probability": auroc(-probabilities.max(1).values, -known_probabilities.max(1).values),
    }


OUTLIER_Z = 3.0  # robust z (median and MAD) above which a photo is a stranger in its own class


def strangers_in_class(features: torch.Tensor, labels: torch.Tensor, k: int = NEIGHBOURS) -> dict:
    """Training photos unlike the rest of their own class (`pasture doctor`): each photo's k-NN cosine
    distance to the other photos of its class (leave-one-out), flagged when its robust z-score within
    the class (median, 1.4826 x MAD) is above OUTLIER_Z. Such a photo is a wrong file, another subject
    or a rare view the model has few examples of; the head may still fit it, but nothing stands near it.
    Classes with fewer than 5 photos are not judged (their median says little)."""
    normalised = F.normalize(features.float(), dim=1)
    distance = torch.zeros(len(labels))
    robust_z = torch.zeros(len(labels))
    judged = torch.zeros(len(labels), dtype=torch.bool)
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        if len(members) < 5:
            continue
        similarity = normalised[members] @ normalised[members].T
        similarity.fill_diagonal_(-2.0)  # a photo is not its own neighbour
        ours = 1.0 - similarity.topk(min(k, len(members) - 1), dim=1).values[:, -1]
        median = ours.median()
        spread = 1.4826 * (ours - median).abs().median()
        distance[members] = ours
        robust_z[members] = (ours - median) / spread.clamp_min(1e-6)
        judged[members] = True
    flagged = (judged & (robust_z > OUTLIER_Z)).nonzero().flatten()
    order = flagged[robust_z[flagged].argsort(descending=True)]
    return {
        "rule": f"k-NN cosine distance (k={k}) to the rest of its class, robust z above {OUTLIER_Z:g}",
        "n_judged": int(judged.sum()),
        "photos": [
            {"index": int(index), "distance": float(distance[index]), "robust_z": float(robust_z[index])}
            for index in order
        ],
    }
