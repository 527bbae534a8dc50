"""`pasture adapt` and `pasture ask`: a probe or fine-tuned run fitted to a new camera's unlabeled photos (an
ordinary new run folder), and which of those photos to label first (LABELS.csv, with a contact sheet).

Both read the run's own training photos again (its data folder, as export's parity check does) and the
target photos, through the backbone's feature cache; the method and its guard are in classify.adapt.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import torch

from pasture.classify.adapt import LABELS_ONLY, ask_order, class_shares, guard, spread_to_target, target_labels
from pasture.classify.features import FrozenBackbone, feature_cache
from pasture.classify.finish import finish_run
from pasture.classify.logistic import fit_linear_head
from pasture.classify.probe import train_probe
from pasture.classify.recipes import Recipe, with_overrides
from pasture.classify.self_training import adapt_network
from pasture.classify.trained import LoadedRun, finished_run_config, run_split
from pasture.core.device import resolve_device
from pasture.core.errors import UserError
from pasture.core.imagefile import image_files_in
from pasture.core.paths import check_output_file, display_name
from pasture.core.plots import pyplot, save_figure
from pasture.core.record import RUN_FOLDER
from pasture.core.runs import atomic_write_text, opened_run, read_checked_json
from pasture.data import ImageSet
from pasture.data.layouts import decode_files, files_fingerprint

ADAPTS = ("probe", "finetune")  # the runs `adapt` takes: a fine-tuned one by classify.self_training
METHOD = (
    "label spreading on the k-NN graph of training and target features (k=10), from the original head's "
    "probabilities, then the head refitted"
)
METHOD_LABELS_ONLY = (  # target_labels' fallback
    "the head refitted with the labelled photos alone (label spreading got fewer of them right than the original head)"
)


class NewPhotos:
    """A finished run, its own train/test split read again, and a folder of a new camera's photos, decoded
    at the run's input size. `adapts`: the kinds of run the caller can adapt ("probe", and for `adapt`
    also "finetune": classify.self_training)."""

    def __init__(self, run: str | os.PathLike, photos: str | os.PathLike, device, what: str, adapts=("probe",)):
        self.run, self.photos, self.device = Path(run), Path(photos), device
        self.config = finished_run_config(self.run)
        self.recipe = Recipe(**self.config["recipe"])
        self.classes: list[str] = self.config["classes"]
        if self.recipe.pretrained not in adapts or "teacher" in self.config:
            raise UserError(
                f"{self.run}: a {self.recipe.name} run {'learns from a teacher' if 'teacher' in self.config else 'trains from scratch' if self.recipe.pretrained == 'none' else 'trains its backbone'}; "
                f"{what} works on {' and '.join(adapts)} runs. For a small network, adapt a probe run and distill "
                f"from it: `pasture adapt PROBE_RUN {self.photos} --out ADAPTED`, then `pasture train DATA "
                f"--teacher ADAPTED --unlabeled {self.photos} --out STUDENT` (docs/results/adapt.md)"
            )
        if not self.photos.is_dir():
            raise UserError(f"{self.photos}: not a folder; give the folder of the new camera's photos")
        self.files = image_files_in([self.photos])
        if not self.files:
            raise UserError(f"{self.photos}: no image files in it")
        dataset = run_split(self.config)
        if dataset is None:
            data = self.config.get("identity", {}).get("data")
            raise UserError(
                f"{self.run}: its training photos ({data}) are not here; {what} reads them beside the new ones"
            )
        self.dataset = dataset
        self.images = decode_files(self.files, self.recipe.image_size)

    def names(self) -> list[str]:
        """Each target file relative to the photos folder, as LABELS.csv names it."""
        return [os.path.relpath(path, self.photos) for path in self.files]

    def adapted_config(self, recipe: Recipe, method: str, labelled: int, report: dict) -> tuple[dict, dict]:
        """(config, identity) of the adapted run: the original's, with what was adapted to and how."""
        adapted_info = {
            "from": str(self.run.resolve()),
            "photos": str(self.photos.resolve()),
            "fingerprint": files_fingerprint(self.photos, self.files),
            "n": len(self.files),
            "labelled": labelled,
            "method": method,
            **{key: report[key] for key in ("changed", "shares_before", "shares_after", "confident") if key in report},
        }
        identity = {**self.config["identity"], "recipe": recipe.recorded(), "adapted": adapted_info}
        carried = ("model", "image_size", "classes", "seed", "data_summary", "eval_every", "device")
        config = {**{key: self.config[key] for key in carried if key in self.config}, "recipe": recipe.recorded()}
        return {**config, "adapted": adapted_info}, identity


class Target(NewPhotos):
    """A probe run, its training photos' and a folder of new photos' features, and the spread labels."""

    def __init__(self, run: str | os.PathLike, photos: str | os.PathLike, device, what: str, adapts=("probe",)):
        super().__init__(run, photos, device, what, adapts)
        model = FrozenBackbone(self.recipe, len(self.classes), device)  # built only for features not cached
        cache = feature_cache(self.recipe)
        self.train_features = cache.features(model, self.dataset.train.images)
        self.features = cache.features(model, self.images)
        # the original run's probabilities from the features just read (a second backbone pass took as long)
        self.original_probabilities = LoadedRun(self.run, device).head_probabilities(self.features, self.images)

    def spread(self, labelled: dict[int, int] | None = None) -> torch.Tensor:
        """Class scores of the target photos (N x classes) by label spreading from the original head's
        probabilities (classify.adapt)."""
        return spread_to_target(
            self.train_features,
            self.dataset.train.labels,
            self.features,
            len(self.classes),
            labelled,
            self.original_probabilities,
        )


def read_labels(path: str | os.PathLike, target: NewPhotos) -> dict[int, int]:
    """A filled-in LABELS.csv (columns file,label; file relative to the photos folder; an empty label is
    unlabeled) as target index -> class index; a row naming an unknown file or class is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--labels {path}: no such file; make one with `pasture ask`")
    index_of = {name: index for index, name in enumerate(target.names())}
    labelled: dict[int, int] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
            raise UserError(f"--labels {path}: needs the columns file and label (as `pasture ask` writes them)")
        for number, row in enumerate(reader, start=2):
            label = (row.get("label") or "").strip()
            if not label:
                continue
            name = (row.get("file") or "").strip()
            if name not in index_of:
                raise UserError(f"--labels {path}, row {number}: no photo {name!r} in {target.photos}")
            if label not in target.classes:
                raise UserError(
                    f"--labels {path}, row {number}: {label!r} is not a class of the run ({', '.join(target.classes)})"
                )
            labelled[index_of[name]] = target.classes.index(label)
    return labelled


def adapt(
    run: str | os.PathLike,
    photos: str | os.PathLike,
    out: str | os.PathLike,
    *,
    labels: str | os.PathLike | None = None,
    device: str = "auto",
    quiet: bool = True,
    force: bool = False,
    command: list[str] | None = None,
    warn=lambda message: None,
) -> dict:
    """A new run folder `out`: RUN's probe fitted again with the photos of `photos` labelled by label
    spreading (and the labelled ones of LABELS.csv as given); a fine-tuned RUN trained again with the
    photos it labels surely (classify.self_training). Returns what changed: the share of the
    target's labels changed and the class shares before and after; when the guard refuses the adaptation,
    `kept_original` is True and nothing is written."""
    where, out = resolve_device(device), Path(out)
    options = {"quiet": quiet, "force": force, "command": command, "warn": warn}
    if _trains_its_backbone(run):
        photos_of = NewPhotos(run, photos, where, "adapt", ADAPTS)
        labelled = read_labels(labels, photos_of) if labels is not None else {}
        return adapt_network(photos_of, labelled, out, photos_of.recipe, options)
    target = Target(run, photos, where, "adapt", ADAPTS)
    return _adapt_probe(target, read_labels(labels, target) if labels is not None else {}, out, options)


def _adapt_probe(target: Target, labelled: dict[int, int], out: Path, options: dict) -> dict:
    """adapt's probe path: the head refitted with the new photos' labels (classify.adapt.target_labels),
    checked by the guard, and the run written."""
    warn, quiet, force, command = options["warn"], options["quiet"], options["force"], options["command"]
    pseudo, how = target_labels(
        target.train_features,
        target.dataset.train.labels,
        target.features,
        len(target.classes),
        labelled,
        target.original_probabilities,
    )
    used = pseudo >= 0
    method = METHOD if how != LABELS_ONLY else METHOD_LABELS_ONLY
    if how == LABELS_ONLY:
        warn(
            "label spreading got fewer of your labelled photos right than the original model; "
            f"adapting with your {len(labelled)} labelled photos only"
        )
    recipe = with_overrides(target.recipe, head_c=target.recipe.head_c or _chosen_c(target))
    head, _, _ = fit_linear_head(
        torch.cat([target.train_features, target.features[used]]),
        torch.cat([target.dataset.train.labels, pseudo[used]]),
        len(target.classes),
        recipe.head_c,
        recipe.balance_classes,
    )
    with torch.no_grad():
        adapted = head(target.features).argmax(1)
    why, report = guard(target.original_probabilities.argmax(1), adapted, target.classes)
    report = {**report, "labelled": len(labelled), "method": method}
    if why is not None:
        warn(f"the adapted model was not kept: {why}; the original run stays as it is")
        return {**report, "kept_original": True, "why": why}
    config, identity = target.adapted_config(recipe, method, len(labelled), report)
    with opened_run(
        out,
        identity,
        config,
        RUN_FOLDER,
        force=force,
        command=command,
        warn=warn,
        on_interrupt=f"{out} is not finished; run the same command with --force to adapt again",
    ) as opened:
        finished = opened.finished
        if finished is None:
            files = [str(path) for path, joins in zip(target.files, used.tolist()) if joins]
            new_photos = ImageSet(target.images[used], pseudo[used], files, target.classes, "synthetic")
            share = len(files) / (len(files) + len(target.dataset.train))  # each photo weighs 1
            result = train_probe(
                target.dataset,
                recipe,
                int(target.config.get("seed", 0)),
                run_dir=out,
                quiet=quiet,
                device=target.device,
                synthetic=new_photos,
                synthetic_ratio=share,
                familiar_extra=True,  # the new camera's photos are familiar to the adapted run
            )
            finished = finish_run(out, result, target.dataset, recipe)
    return {**report, "kept_original": False, "run": str(out), "metrics": finished}


def _trains_its_backbone(run: str | os.PathLike) -> bool:
    """A fine-tuned run (not a student): adapted by classify.self_training, asked by its own network."""
    config = finished_run_config(Path(run))
    return Recipe(**config["recipe"]).pretrained == "finetune" and "teacher" not in config


def _ask_scores(
    run: str | os.PathLike, photos: str | os.PathLike, device
) -> tuple[NewPhotos, torch.Tensor, torch.Tensor]:
    """(the new photos, their class scores, their features) by which `ask` orders them: a probe's labels
    spread from its head on the features of its frozen backbone; a fine-tuned run's own probabilities
    (what its self-training keeps at >= 0.95) on its own network's pooled features."""
    if _trains_its_backbone(run):
        photos_of = NewPhotos(run, photos, device, "ask", ADAPTS)
        loaded = LoadedRun(run, device)
        return photos_of, loaded.probabilities(photos_of.images), loaded.features(photos_of.images)
    target = Target(run, photos, device, "ask", ADAPTS)
    return target, target.spread(), target.features


def _chosen_c(target: Target) -> float:
    """The C the original run's head was fitted with (its metrics' notes; 0, search again, if absent)."""
    metrics = read_checked_json(target.run / "metrics.json", what="finished run")
    chosen = (metrics.get("notes") or {}).get("head", {}).get("chosen_c")
    return float(chosen) if chosen else 0.0


def ask(run: str | os.PathLike, photos: str | os.PathLike, k: int, out: str | os.PathLike, device="cpu") -> dict:
    """Which `k` photos of `photos` to label first (classify.adapt.ask_order), written to the CSV `out`
    (file,label,guess,confidence, in the order to label; label empty) with a contact sheet ask.png
    beside it. Returns the rows."""
    if k < 1:
        raise UserError(f"--k {k}: ask for at least 1 photo")
    out = check_output_file(out, "--out")
    target, scores, features = _ask_scores(run, photos, resolve_device(device))
    order = ask_order(scores, features, k)
    names = target.names()
    rows = [
        {
            "file": names[index],
            "label": "",
            "guess": target.classes[int(scores[index].argmax())],
            "confidence": float(scores[index].max()),
        }
        for index in order
    ]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file", "label", "guess", "confidence"])
    writer.writerows([row["file"], "", row["guess"], f"{row['confidence']:.3f}"] for row in rows)
    atomic_write_text(out, text.getvalue())
    sheet = out.with_name("ask.png")
    _contact_sheet([target.images[index] for index in order], rows, sheet)
    return {
        "csv": str(out),
        "sheet": str(sheet),
        "rows": rows,
        "estimated_shares": class_shares(scores.argmax(1), target.classes),
    }


def _contact_sheet(images: list[torch.Tensor], rows: list[dict], path: Path) -> None:
    plt = pyplot()
    columns = min(5, len(images))
    lines = (len(images) + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(2.2 * columns, 2.5 * lines), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for number, (axis, image, row) in enumerate(zip(axes.flat, images, rows), start=1):
        axis.imshow(image.permute(1, 2, 0).numpy())
        axis.set_title(f"{number}. {display_name(Path(row['file']).name)[:22]}\nguess {row['guess']}", fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
