"""Synthetic data: sample a trained GAN into a class-folder set, filter it, and score its usefulness.

Usefulness is measured the way "How good is my GAN?" (Shmelkov, Schmid, Alahari, ECCV 2018) does:
  GAN-test   a classifier trained on REAL training images, evaluated on synthetic images:
             are the samples recognisable as their class?
  GAN-train  a classifier trained on SYNTHETIC images only, evaluated on the real test split:
             do the samples cover what the class looks like?
plus memorisation: how many samples are near-copies of a training image.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from pasture.classify.evaluate import evaluate_model, predict_probabilities
from pasture.classify.fit import train_classifier
from pasture.classify.recipes import resolve_recipe
from pasture.classify.trained import load_run
from pasture.core.errors import UserError
from pasture.core.paths import class_names_problem, ensure_under, new_folder_mode, safe_path_part
from pasture.core.runs import (
    atomic_write_json,
    check_output_folder,
    is_whole_number,
    load_checkpoint,
    read_checked_json,
    stored_settings,
    versions,
)
from pasture.core.stats import wilson_interval
from pasture.data import Dataset, ImageSet, class_index_map
from pasture.gan.kid import kid_score
from pasture.gan.presets import GanPreset
from pasture.gan.sampling import build_samplers, generate
from pasture.gan.trainer import resize_uint8, save_grid, to_gan_range, validate_gan_preset

MAX_FILTER_ATTEMPTS = 20  # sample at most 20x the asked count per class when filtering


MAX_GAN_IMAGE_SIZE = 1024  # px; a GAN folder asking for more is damaged or hostile


def gan_config_problem(config: dict) -> str | None:
    """The schema of a GAN folder's config.json (untrusted: GAN folders travel between people)."""
    if config.get("kind") != "gan":
        return "is not the config of a pasture GAN"
    problem = class_names_problem(config.get("classes"))
    if problem is not None:
        return problem
    preset, problem = stored_settings(config, "preset", GanPreset, validate_gan_preset)
    if problem is not None:
        return problem
    if not is_whole_number(preset.image_size, 16, MAX_GAN_IMAGE_SIZE):
        return f"preset image_size {preset.image_size}: at most {MAX_GAN_IMAGE_SIZE} px"
    return None


def load_gan(gan_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """(preset, classes, samplers on `device`, config) of a finished GAN folder, its config checked."""
    gan_dir = Path(gan_dir)
    config_path = gan_dir / "config.json"
    if not config_path.is_file():
        raise UserError(
            f"{gan_dir}: not a pasture GAN folder (no GAN config.json); give the --out of `pasture gan train`"
        )
    config = read_checked_json(config_path, gan_config_problem, what="GAN folder")
    if not (gan_dir / "summary.json").is_file():
        raise UserError(f"{gan_dir}: this GAN has not finished; continue it with `pasture gan train ... --resume`")
    preset = GanPreset(**config["preset"])
    state = load_checkpoint(gan_dir / "checkpoint.pt")
    try:
        samplers = build_samplers(preset, len(config["classes"]), state["units"], device)
    except (KeyError, RuntimeError, TypeError, ValueError) as error:
        raise UserError(f"{gan_dir / 'checkpoint.pt'}: weights do not fit the GAN's preset ({error})") from None
    return preset, config["classes"], samplers, config


CLASS_GRID_SAMPLES = 32  # per class: 4 rows of 8 in grid_<class>.png


def write_class_grids(
    gan_dir: Path, preset: GanPreset, classes: list[str], units: list[dict], seed: int = 0
) -> list[Path]:
    """grid_<class>.png in a finished GAN folder: the sampler's images of each class (fixed seed), so a
    user sees at a glance what each class's samples look like."""
    samplers = build_samplers(preset, len(classes), units)
    generator = torch.Generator().manual_seed(seed)
    written = []
    for class_index, name in enumerate(classes):
        images = generate(preset, samplers, class_index, CLASS_GRID_SAMPLES, generator)
        path = ensure_under(gan_dir / f"grid_{safe_path_part(name, 'class name')}.png", gan_dir)
        save_grid(to_gan_range(images), path, nrow=8)
        written.append(path)
    return written


def _png_bytes(image_uint8: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image_uint8.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def sample_images(
    gan_dir: str | os.PathLike,
    per_class: int,
    seed: int = 0,
    truncation: float | None = None,
    filter_run: str | os.PathLike | None = None,
    min_confidence: float = 0.0,
    warn=None,
    device: str | torch.device = "cpu",
) -> tuple[ImageSet, dict]:
    """Generate `per_class` images of every class (in memory). With `filter_run`, keep only samples
    that run's classifier gives probability >= min_confidence for their intended class."""
    if per_class < 1:
        raise UserError(f"--per-class {per_class}: must be at least 1")
    if not 0.0 <= min_confidence <= 1.0:
        raise UserError(f"--min-confidence {min_confidence}: must be between 0 and 1")
    preset, classes, samplers, config = load_gan(gan_dir, device)
    generator = torch.Generator().manual_seed(seed)
    # The filter: the run's classifier, its input size, and each GAN class's index in its output.
    filtering: tuple[torch.nn.Module, int, torch.Tensor] | None = None
    if filter_run is not None:
        classifier, classifier_config = load_run(filter_run, device)
        to_classifier = class_index_map(
            classes, classifier_config["classes"], f"--filter-run {filter_run}: the GAN's classes"
        )
        filtering = classifier, classifier_config["image_size"], to_classifier
    images, labels, counts, attempts = [], [], {}, {}
    for class_index, name in enumerate(classes):
        kept: list[torch.Tensor] = []
        tried = 0
        while sum(len(batch) for batch in kept) < per_class:
            if filtering is not None and tried >= MAX_FILTER_ATTEMPTS * per_class:
                break
            need = per_class - sum(len(batch) for batch in kept)
            batch = generate(
                preset, samplers, class_index, need if filtering is None else max(need, 32), generator, truncation
            )
            tried += len(batch)
            if filtering is not None:
                classifier, size, to_classifier = filtering
                probabilities = predict_probabilities(classifier, resize_uint8(batch, size))
                batch = batch[probabilities[:, to_classifier[class_index]] >= min_confidence][:need]
            kept.append(batch)
        made = torch.cat(kept) if kept else torch.empty(0, 3, preset.image_size, preset.image_size, dtype=torch.uint8)
        counts[name], attempts[name] = len(made), tried
        if len(made) < per_class and warn is not None:
            warn(
                f"class {name}: only {len(made)} of {tried} samples reached confidence {min_confidence}; "
                f"kept {len(made)} instead of {per_class}"
            )
        images.append(made)
        labels.append(torch.full((len(made),), class_index, dtype=torch.long))
    synthetic = ImageSet(
        images=torch.cat(images), labels=torch.cat(labels), files=[], classes=list(classes), split="synthetic"
    )
    info = {
        "gan": str(Path(gan_dir).resolve()),
        "gan_preset": preset.name,
        "seed": seed,
        "truncation": truncation,
        "per_class": per_class,
        "counts": counts,
        "sampled": attempts,
        "filter_run": str(Path(filter_run).resolve()) if filter_run is not None else None,
        "min_confidence": min_confidence if filter_run is not None else None,
        "image_size": preset.image_size,
        "classes": list(classes),
    }
    return synthetic, info


def write_synthetic(synthetic: ImageSet, info: dict, out: str | os.PathLike, force: bool = False) -> Path:
    """Write SYNTH/<class>/*.png + synth.json. Built in a temporary folder and moved into place, so an
    interrupted write leaves nothing half-written."""
    out = Path(out)
    if out.is_symlink():  # --force would remove the link's target's files: only a folder pasture wrote is replaced
        raise UserError(f"{out}: is a symbolic link; give a new --out (pasture replaces only its own folders)")
    if check_output_folder(out, "synth.json", "synthetic set") and not force:
        raise UserError(f"{out}: already holds a synthetic set; choose a new --out or use --force to replace it")
    for name in synthetic.classes:  # each becomes a folder name: nothing may steer a write outside `out`
        safe_path_part(name, "class name")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        os.chmod(staging, new_folder_mode())  # mkdtemp makes it 0o700: keep the user's umask instead
    except OSError as error:
        raise UserError(f"{out.parent}: cannot write here ({error.strerror}); choose another --out") from None
    try:
        for class_index, name in enumerate(synthetic.classes):
            folder = ensure_under(staging / name, staging)
            folder.mkdir()
            for number, image in enumerate(synthetic.images[synthetic.labels == class_index]):
                # Plain writes (they honour the umask): the staging folder is moved into place whole.
                ensure_under(folder / f"{name}_synth_{number:05d}.png", folder).write_bytes(_png_bytes(image))
        info = {**info, "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "versions": versions()}
        atomic_write_json(staging / "synth.json", info)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _flat32(images_uint8: torch.Tensor) -> torch.Tensor:
    images = to_gan_range(resize_uint8(images_uint8, 32))
    return images.reshape(images.shape[0], -1)


def two_nearest(queries: torch.Tensor, references: torch.Tensor, exclude_self: bool = False) -> torch.Tensor:
    """L2 distances (N x 2) from each query image to its nearest and second-nearest reference image,
    at 32 px in [-1, 1]."""
    distances = torch.cdist(_flat32(queries), _flat32(references))
    if exclude_self:
        distances.fill_diagonal_(float("inf"))
    return distances.topk(2, dim=1, largest=False).values


COPY_RATIO = 0.5  # nearest / second-nearest distance below this: close to ONE training image in particular


def memorisation(synthetic: ImageSet, real_train: ImageSet) -> dict:
    """Fraction of samples that are near-copies of a training image.

    A sample is a near-copy when it is (1) closer to its nearest training image than 95% of training
    images are to their nearest other training image, and (2) much closer to that one image than to
    any other (nearest / second-nearest distance < 0.5). Criterion (2) matters: a blurry, averaged
    sample is close in pixel distance to many training images at once, which is not copying.
    """
    real = two_nearest(real_train.images, real_train.images, exclude_self=True)
    threshold = float(torch.quantile(real[:, 0], 0.05))
    synth = two_nearest(synthetic.images, real_train.images)
    close = synth[:, 0] < threshold
    specific = synth[:, 0] / synth[:, 1].clamp_min(1e-8) < COPY_RATIO
    copies = int((close & specific).sum())
    n = len(synthetic)
    return {
        "near_copy_fraction": copies / n if n else float("nan"),
        "near_copy_ci95": list(wilson_interval(copies, n)),
        "n": n,
        "closer_than_real_5th_percentile": float(close.float().mean()) if n else float("nan"),
        "distance_threshold": threshold,
        "ratio_threshold": COPY_RATIO,
        "synthetic_nn_median": float(synth[:, 0].median()) if n else float("nan"),
        "real_nn_median": float(real[:, 0].median()),
    }


# GAN-test and GAN-train train the report's CNN from scratch at its own size: what the samples are for.
# (Not the default recipe: since issue 25 that is the pretrained probe at 260 px, which needs no samples.)
SCORING_RECIPE = "scratch"


def score_synthetic(
    synthetic: ImageSet,
    dataset,
    run: str | os.PathLike | None = None,
    recipe_name: str = SCORING_RECIPE,
    seed: int = 0,
    device: str | torch.device = "cpu",
    gan_image_size: int | None = None,
) -> dict:
    """KID, GAN-test (overall and per class), GAN-train (with the same recipe trained on real images for
    reference) and memorisation.

    `dataset` is the real data at the classifier's input size; its test split is only evaluated on.
    KID compares at `gan_image_size` (the size the GAN made; default: the samples' size).
    """
    recipe = resolve_recipe(recipe_name)
    size = dataset.image_size
    if recipe.image_size != size:
        recipe = replace(recipe, image_size=size)
    synthetic_at_size = replace(synthetic, images=resize_uint8(synthetic.images, size))
    if run is not None:
        classifier, config = load_run(run, device)
        if config["image_size"] != size:
            raise UserError(f"--run {run}: its model takes {config['image_size']} px images, the scoring data {size}")
        to_model = class_index_map(synthetic.classes, config["classes"], f"--run {run}: the synthetic classes")
        gan_test = evaluate_model(classifier, synthetic_at_size.images, to_model[synthetic.labels], config["classes"])
        gan_test_classifier = str(Path(run).resolve())
    else:
        classifier = train_classifier(dataset, recipe, seed, device=device).model
        gan_test = evaluate_model(classifier, synthetic_at_size.images, synthetic.labels, dataset.classes)
        gan_test_classifier = f"recipe {recipe.name} trained on the real training split (seed {seed})"
    synthetic_only = Dataset(
        root="synthetic",
        layout="synthetic",
        classes=dataset.classes,
        image_size=size,
        train=replace(synthetic_at_size, split="train"),
        test=dataset.test,
    )
    synthetic_model = train_classifier(synthetic_only, recipe, seed, device=device).model
    gan_train = evaluate_model(synthetic_model, dataset.test.images, dataset.test.labels, dataset.classes)
    real_model = classifier if run is None else train_classifier(dataset, recipe, seed, device=device).model
    real_train = evaluate_model(real_model, dataset.test.images, dataset.test.labels, dataset.classes)

    def brief(report):
        return {key: report[key] for key in ("accuracy", "ci95", "n", "per_class")}

    # KID against the real TEST photos (never trained on, by the GAN or anything here), at the GAN's size.
    kid = kid_score(synthetic.images, dataset.test.images, gan_image_size or synthetic.images.shape[-1], device)
    return {
        "kid": kid["kid"],
        "kid_se": kid["kid_se"],
        "kid_detail": kid,
        "gan_test_per_class": {name: row["accuracy"] for name, row in gan_test["per_class"].items()},
        "gan_test": {**brief(gan_test), "classifier": gan_test_classifier},
        "gan_train": {**brief(gan_train), "recipe": recipe.name, "n_synthetic_train": len(synthetic)},
        "real_train_reference": {**brief(real_train), "recipe": recipe.name},
        "memorisation": memorisation(synthetic_at_size, dataset.train),
        "seed": seed,
    }
