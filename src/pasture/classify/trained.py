"""A trained classifier: what training returns, ensemble members, and loading a finished run folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from torch import nn

from pasture.classify.backbones import backbone_key, frozen_features
from pasture.classify.evaluate import predict_probabilities
from pasture.classify.familiarity import Familiarity
from pasture.classify.predictions import prediction_rows, write_predictions_csv
from pasture.classify.recipes import Recipe, validate_recipe
from pasture.core.defaults import DataOptions
from pasture.core.errors import UserError
from pasture.core.loop import Checkpoint
from pasture.core.paths import class_names_problem
from pasture.core.runs import is_whole_number, load_checkpoint, read_checked_json, stored_settings
from pasture.data import load_dataset
from pasture.data.layouts import decode_files
from pasture.models import Classifier as Network
from pasture.models import Ensemble, create_model, list_models, timm_net

MEMBER_SEED_STRIDE = 1000  # member i of an ensemble trains with seed + 1000 * i
CHECKPOINT_FORMAT = 1


def member_checkpoint(run_dir: str | os.PathLike | None) -> Checkpoint:
    """A classifier run's checkpoint.pt (its ensemble members, the history; history.jsonl beside it):
    one format for the training loop and the probe; writes nothing without a run folder."""
    path = Path(run_dir) / "checkpoint.pt" if run_dir is not None else None
    return Checkpoint(path, CHECKPOINT_FORMAT, parts="members", log="history", log_file="history.jsonl")


@dataclass
class TrainResult:
    # One Classifier, or an Ensemble of them, in eval mode; or what builds it on first use of .model: a
    # probe scores its cached features, so a warm `pasture train` never needs its networks (building them
    # imports timm and torchvision: 2.5 of a 9 s run).
    built: nn.Module | Callable[[], nn.Module]
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    nonfinite_loss: bool = False
    notes: dict = field(default_factory=dict)
    # The model's probabilities on the train and test images, when training had them for free (a probe
    # scores its cached features: a second pass of the backbone over the photos took 23 of a warm
    # run's 40 s). None: scoring runs the model.
    train_probabilities: torch.Tensor | None = None
    test_probabilities: torch.Tensor | None = None

    @property
    def model(self) -> nn.Module:
        if not isinstance(self.built, nn.Module):
            self.built = self.built()
        return self.built


def build_members(
    recipe: Recipe, num_classes: int, member_states: list[dict], device: str | torch.device = "cpu"
) -> nn.Module:
    """The final model from saved member weights (on any device), on `device`: one Classifier, or an
    Ensemble."""
    members = []
    for state in member_states:
        member = create_model(recipe.model, num_classes, recipe.image_size)
        member.load_state_dict(state)
        members.append(member.to(device).eval())
    return members[0] if len(members) == 1 else Ensemble(members)


def weights_fit(state: dict, config: dict) -> str:
    """ ", they fit NAME" for the registered model whose weights have the checkpoint's names and shapes,
    else a count of what differs: one line instead of torch's list of every mismatched tensor (3 KB)."""
    try:
        weights = {name: tuple(value.shape) for name, value in state["members"][0].items()}
    except (KeyError, IndexError, TypeError, AttributeError):
        return " (the checkpoint holds no model weights)"
    for name in list_models():
        try:
            candidate = create_model(name, len(config["classes"]), config["image_size"])
        except Exception:  # a model this size or class count cannot be: not the one
            continue
        if {key: tuple(value.shape) for key, value in candidate.state_dict().items()} == weights:
            return f": they fit {name}"
    return f" (the checkpoint holds {len(weights)} tensors that match no model pasture knows at this size)"


MAX_IMAGE_SIZE = 2048  # px; a run folder asking for more is damaged or hostile (100000 px would allocate GBs)


def run_config_problem(config: dict) -> str | None:
    """The schema of a run folder's config.json (a folder is untrusted input: it travels between people)."""
    problem = class_names_problem(config.get("classes"))
    if problem is not None:
        return problem
    recipe, problem = stored_settings(config, "recipe", Recipe, validate_recipe)
    if problem is not None:
        return problem
    size = config.get("image_size")
    if not is_whole_number(size, 1, MAX_IMAGE_SIZE):
        return f"image_size {size!r}: must be a whole number of px from 1 to {MAX_IMAGE_SIZE}"
    if size != recipe.image_size or config.get("model") != recipe.model:
        return (
            f"image_size {size} / model {config.get('model')!r} differ from its recipe's "
            f"{recipe.image_size} / {recipe.model!r}"
        )
    return None


def finished_run_config(run: Path) -> dict:
    """config.json of a finished run folder, checked (a UserError naming the folder otherwise)."""
    if not (run / "config.json").is_file():
        raise UserError(f"{run}: not a pasture run folder (no config.json); give the --out of a `pasture train`")
    if not (run / "metrics.json").is_file():
        raise UserError(f"{run}: this run has not finished; continue it with `pasture train ... --resume`")
    return read_checked_json(run / "config.json", run_config_problem, what="run folder")


def load_run(run: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode on `device`, config dict) of a finished run folder, wherever it was trained
    (the checkpoint is read onto the CPU first); an ensemble comes back as one module whose output
    averages its members' probabilities."""
    run = Path(run)
    config = finished_run_config(run)
    state = load_checkpoint(run / "checkpoint.pt")
    try:
        model = build_members(Recipe(**config["recipe"]), len(config["classes"]), state["members"], device)
    except (KeyError, RuntimeError, TypeError, ValueError):
        raise UserError(
            f"{run / 'checkpoint.pt'}: weights do not fit {config['model']}"
            f"{weights_fit(state, config)}; the run folder was edited or mixed up (train it again)"
        ) from None
    model.eval()
    return model, config


class LoadedRun:
    """A finished run loaded once for many predictions: the app's live camera sends a frame every few
    hundred milliseconds, and loading the backbones again for each (about a second) would be most of the
    time. `api.load(RUN)` makes one."""

    def __init__(self, run: str | os.PathLike, device: str | torch.device = "cpu"):
        self.run, self.device = Path(run), torch.device(device)
        self.config = finished_run_config(self.run)
        self.classes: list[str] = self.config["classes"]
        self.image_size: int = self.config["image_size"]
        self.familiarity = Familiarity.load(run)  # None for runs that keep no training features
        # a probe's frozen backbone runs by ONNX Runtime where it can (classify.backbones)
        self.backbone_key = backbone_key(Recipe(**self.config["recipe"]))
        self._model: nn.Module | None = None
        self._probe_heads: list[nn.Linear] | None = None
        if self.backbone_key is None or self.device.type != "cpu":
            self._model = load_run(run, device)[0]  # built now: its weights are the run

    @property
    def model(self) -> nn.Module:
        """The run's torch model (built on first use for a probe whose backbone ONNX Runtime runs)."""
        if self._model is None:
            self._model = load_run(self.run, self.device)[0]
        return self._model

    def probabilities(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x S x S (S = image_size) -> N x classes, with the run's test-time augmentation."""
        return predict_probabilities(self.model, images_uint8, tta=self.config["recipe"].get("tta", False))

    def _heads(self) -> list[nn.Module]:
        """Each member's head: read from a probe's checkpoint while its torch model is not built (the
        weights are the same), else the model's own."""
        if self._model is None and self.backbone_key is not None:
            if self._probe_heads is None:
                self._probe_heads = probe_heads(self.run, len(self.classes))
            if self._probe_heads is not None:
                return list(self._probe_heads)
        members = list(self.model.members) if isinstance(self.model, Ensemble) else [self.model]
        return [timm_net(member).get_classifier() for member in members]

    def features(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features: a probe's from the cached ONNX Runtime graph on the CPU (no torch
        backbone is built for it), else through the model's first member (classify.backbones)."""
        return frozen_features(images_uint8, self.backbone_key, self.device, self._first_member)

    def _first_member(self) -> Network:
        members = list(self.model.members) if isinstance(self.model, Ensemble) else [self.model]
        return cast(Network, members[0])

    def head_probabilities(self, features: torch.Tensor, images_uint8: torch.Tensor) -> torch.Tensor:
        """The probabilities of images whose backbone features are at hand (the mean of the members'
        heads); with TTA the model sees the images' shifted views instead."""
        if self.config["recipe"].get("tta", False):
            return self.probabilities(images_uint8)
        return heads_probabilities(self._heads(), features)

    def scores(self, images_uint8: torch.Tensor, nearest: int = 0) -> tuple[torch.Tensor, dict | None]:
        """(probabilities, familiarity or None): for a run that keeps its training photos' features (a
        probe), the backbone runs once and both come from its features (the head's probabilities are the
        model's, to float rounding); with TTA, the model sees the shifted views for its probabilities.
        With `nearest`, the familiarity also holds each image's `nearest` training photos
        (Familiarity.nearest)."""
        if self.familiarity is None:
            return self.probabilities(images_uint8), None
        features = self.features(images_uint8)
        found: dict = self.familiarity.score(features)
        if nearest:
            found["nearest"] = self.familiarity.nearest(features, nearest)
        return self.head_probabilities(features, images_uint8), found

    def label(
        self, images_uint8: torch.Tensor, names: list[str], unknown: bool = False, nearest: int = 0
    ) -> list[dict]:
        """One row per image as `pasture predict` gives it: file (from `names`), label, probabilities, and
        for a run that keeps them, familiarity and familiar; with `unknown`, an unfamiliar photo's label is
        "unknown" (its best class stays in `best_class`); with `nearest`, its nearest training photos
        (Familiarity.nearest's {file, class, distance, thumbnail JPEG bytes, ...}, nearest first)."""
        probabilities, found = self.scores(images_uint8, nearest)
        rows = prediction_rows(
            [Path(name) for name in names], probabilities.tolist(), self.classes, familiarity_columns(found), unknown
        )
        if found is not None and "nearest" in found:
            for row, near in zip(rows, found["nearest"]):
                row["nearest"] = [{**item, "class": self.classes[item["label"]]} for item in near]
        return rows


def heads_probabilities(heads: list[nn.Module], features: torch.Tensor) -> torch.Tensor:
    """The mean of the heads' softmax on backbone `features` (N x classes, on the CPU), as Ensemble
    averages its members' probabilities."""
    with torch.no_grad():
        return torch.stack(
            [torch.softmax(head(features.to(next(head.parameters()).device)).float().cpu(), 1) for head in heads]
        ).mean(0)


def probe_heads(run: Path, classes: int) -> list[nn.Linear] | None:
    """Each member's linear head, read from a probe run's checkpoint (its weights named net.classifier.*),
    or None when they are not there in the expected shape (the model's own path then says what is wrong)."""
    state = load_checkpoint(run / "checkpoint.pt")
    heads = []
    for member in state.get("members", []) if isinstance(state, dict) else []:
        weight, bias = member.get("net.classifier.weight"), member.get("net.classifier.bias")
        if (
            weight is None
            or bias is None
            or weight.dim() != 2
            or weight.shape[0] != classes
            or bias.shape != (classes,)
        ):
            return None
        head = nn.Linear(weight.shape[1], classes)
        head.load_state_dict({"weight": weight, "bias": bias})
        heads.append(head.eval())
    return heads or None


def familiarity_columns(found: dict[str, torch.Tensor] | None) -> list[tuple[float, bool]] | None:
    """(familiarity, familiar) per image, as prediction_rows takes them."""
    if found is None:
        return None
    return list(zip(found["familiarity"].tolist(), found["familiar"].tolist()))


# The old name, kept for a release (issue 44): models.registry's nn.Module is also called Classifier.
Classifier = LoadedRun


def csv_scorer(model: LoadedRun):
    """uint8 images (numpy) -> what predictions.batch_cells takes: probabilities, and with a familiarity
    bank (probabilities, [(familiarity, familiar)])."""

    def scores_of(images_uint8):
        probabilities, found = model.scores(torch.from_numpy(images_uint8))
        return (probabilities.numpy(), familiarity_columns(found)) if found is not None else probabilities.numpy()

    return scores_of


def predict_files(
    model: LoadedRun, files: list[Path], csv: str | os.PathLike | None, quiet: bool, unknown: bool
) -> list[dict] | dict:
    """pasture.api.predict on a loaded run: rows, or with `csv` the counts of the CSV written."""
    if not files:
        raise UserError("predict: give at least one image file or folder")
    if csv is not None:
        return write_predictions_csv(
            files,
            model.classes,
            model.image_size,
            csv_scorer(model),
            csv,
            quiet,
            model.familiarity is not None,
            unknown,
        )
    return model.label(decode_files(files, model.image_size), [str(path) for path in files], unknown)


def run_split(config: dict):
    """The run's own train/test split, read again from its data folder with the run's data options
    (groups and a grouped split included), or None when that folder is not here or no longer reads."""
    identity = config.get("identity", {})
    data = identity.get("data")
    if not data or not Path(data).is_dir():
        return None
    try:
        options = DataOptions.from_identity({**identity, "classes": config["classes"], "strict": False})
        return load_dataset(data, config["image_size"], options, warn=lambda message: None)
    except UserError:
        return None
