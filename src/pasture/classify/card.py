"""MODEL_CARD.md of a run folder: what the model is, what it was trained on, how well it did (with its
interval and n), where that figure can mislead, and how to reproduce it. Plain text from the run's
config and record; written with metrics.json."""

from __future__ import annotations

import shlex


def _pct(value: float) -> str:
    return f"{value:.1%}"


def _interval(accuracy: float, ci95: list[float], n: int) -> str:
    return f"{_pct(accuracy)} (95% CI {_pct(ci95[0])}-{_pct(ci95[1])}, n={n})"


def model_card(config: dict, record: dict) -> str:
    """The card's Markdown for a run's config.json and its RunRecord (metrics.json) as dicts: its title,
    then each of SECTIONS in turn (a section with nothing to say gives no lines)."""
    recipe, classes = config["recipe"], config["classes"]
    lines = [f"# Model card: {' vs '.join(classes)} ({config['model']}, recipe `{recipe['name']}`)", ""]
    for section in SECTIONS:
        lines += section(config, record)
    return "\n".join(lines)


def _purpose(config: dict, record: dict) -> list[str]:
    classes = config["classes"]
    return [
        "## What it is for",
        "",
        f"Telling {', '.join(classes[:-1])} and {classes[-1]} apart in photos like the ones it was trained on: "
        f"an image is resized so its shorter side is {config['image_size']} px and centre-cropped, and the "
        'model returns one probability per class. It was not trained to say "none of these": every image '
        "gets one of the classes.",
        "",
    ]


def _data(config: dict, record: dict) -> list[str]:
    summary = config["data_summary"]
    lines = ["## Data", "", "| class | training images | test images |", "|---|---|---|"]
    for name in config["classes"]:
        test = summary["test_counts"][name] if summary.get("test_counts") else "-"
        lines.append(f"| {name} | {summary['train_counts'][name]} | {test} |")
    skipped = summary.get("skipped") or []
    said = "; ".join(f"{s['file']} ({s['reason']})" for s in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
    skipped_text = f"{len(skipped)} file(s) were skipped: {said}" if skipped else "No file was skipped."
    return [*lines, "", f"From `{summary['root']}` ({summary['layout']} layout). {skipped_text}", ""]


def _recipe(config: dict, record: dict) -> list[str]:
    return ["## Recipe", "", recipe_line(config, record), ""]


def _results(config: dict, record: dict) -> list[str]:
    lines = [
        "## How well it did",
        "",
        f"- Test accuracy: {_interval(record['test_accuracy'], record['test_ci95'], record['n_test'])}.",
        f"- Training accuracy: {_interval(record['train_accuracy'], record['train_ci95'], record['n_train'])}.",
    ]
    for name, row in record["per_class"].items():
        lines.append(f"- {name}: {_interval(row['accuracy'], row['ci95'], row['n'])} of the test images.")
    if record.get("diverged"):
        lines.append("- The training loss became NaN or infinite: the figures describe a broken model.")
    low, high = record["test_ci95"]
    return [
        *lines,
        "",
        f"With {record['n_test']} test images, accuracies within about {50 * (high - low):.0f} points of each "
        "other cannot be told apart.",
        "",
    ]


def _per_group(config: dict, record: dict) -> list[str]:
    if not record.get("per_group"):
        return []
    lines = ["## Per photo source (group)", "", "| source | test accuracy | seen in training |", "|---|---|---|"]
    unseen = record.get("unseen") or {}
    for name, row in record["per_group"].items():
        seen = "no" if name in set(unseen.get("groups", [])) else "yes"
        lines.append(f"| {name} | {_interval(row['accuracy'], row['ci95'], row['n'])} | {seen} |")
    if unseen:
        gap = " — below the interval of the sources it trained on: it learned the sources as well as the classes."
        lines += [
            "",
            f"On sources the model never saw: {_interval(unseen['accuracy'], unseen['ci95'], unseen['n'])}"
            + (gap if unseen.get("gap_beyond_intervals") else "."),
        ]
    return [*lines, ""]


def _adapted(config: dict, record: dict) -> list[str]:
    return adapted_section(config.get("adapted"))


def _familiarity(config: dict, record: dict) -> list[str]:
    familiar = (record.get("notes") or {}).get("familiarity")
    if not familiar:
        return []
    return [
        "## Photos unlike anything it was taught",
        "",
        f"Each prediction says how familiar the photo is: {familiar['method']}. A photo farther than "
        f"{familiar['threshold']:.3f} is unfamiliar (`pasture predict --unknown` labels it unknown); that "
        f"threshold keeps {familiar['kept']:.0%} of the training photos familiar, measured on {familiar['chosen_on']}. "
        "Photos of other things, and photos from a camera or place it never saw, are flagged alike. "
        "The ONNX and OpenVINO exports carry the same familiarity (outputs `familiarity` and `distance`).",
        "",
    ]


def _caveat(config: dict, record: dict) -> list[str]:
    return [
        "## Where the test figure can mislead",
        "",
        "The test images came from the same folders, and so most likely from the same cameras, places and "
        "websites, as the training images. A model trained on a few photos readily learns the photo source "
        "(lighting, background, camera, compression) instead of the animal, and then fails on photos from "
        "anywhere else; pasture's own measurement on cows and horses found from-scratch models near or below "
        "chance on a horse source they never saw while their test split said about 70%. If each class came "
        "from a different source, the test accuracy above mostly measures the sources. Before relying on "
        "it, score the model on a few dozen photos from somewhere it never saw: "
        "`pasture evaluate RUN NEW_PHOTOS/`.",
        "",
    ]


def _reproduce(config: dict, record: dict) -> list[str]:
    command, device = config.get("command"), config.get("device", {})
    return [
        "## Reproduce",
        "",
        "```",
        shlex.join(command) if command else "(trained from Python: see config.json for every setting)",
        "```",
        "",
        f"The same seed and settings give the same numbers on the same machine (trained on "
        f"{device.get('name', 'the CPU')}, {device.get('precision', 'fp32')}; "
        f"pasture {config['versions']['pasture']}, torch {config['versions']['torch']}).",
        "",
    ]


# The card's sections in order, each (config, record) -> its Markdown lines.
SECTIONS = (_purpose, _data, _recipe, _results, _per_group, _adapted, _familiarity, _caveat, _reproduce)


def adapted_section(adapted: dict | None) -> list[str]:
    """What `pasture adapt` did, for an adapted run's card."""
    if not adapted:
        return []

    def shares(values: dict) -> str:
        return ", ".join(f"{name} {share:.0%}" for name, share in values.items())

    return [
        "## Adapted to a new camera",
        "",
        f"Adapted from `{adapted['from']}` to the {adapted['n']} photos of `{adapted['photos']}` "
        f"({adapted['labelled']} labelled by hand): {adapted['method']}."
        + (
            f" On those photos it changed {adapted['changed']:.0%} of the original's labels; estimated classes "
            f"{shares(adapted['shares_after'])} (the original said {shares(adapted['shares_before'])})."
            if "changed" in adapted
            else ""
        )
        + " The test figures below are on the original split; score the new camera with `pasture evaluate` on "
        "labelled photos from it.",
        "",
    ]


def recipe_line(config: dict, record: dict) -> str:
    """What the run was trained with, and only what it used: a probe's C and folds (it has no epochs,
    optimizer or batches), a trained network's schedule."""
    recipe = config["recipe"]
    description = recipe.get("description") or ""
    named = f"`{recipe['name']}`{': ' + description if description else ''}. Model {config['model']} at {config['image_size']} px"
    extras = (f", ensemble of {recipe['ensemble']}" if recipe.get("ensemble", 1) > 1 else "") + (
        ", test-time augmentation" if recipe.get("tta") else ""
    )
    if recipe.get("pretrained") == "probe":
        head = (record.get("notes") or {}).get("head") or {}
        chosen = (
            f"C = {head['chosen_c']:g}, chosen by held-out cross-entropy on {head['folds']}"
            if head.get("chosen_c")
            else "C as given"
        )
        balance = ", classes weighted to balance" if recipe.get("balance_classes") else ""
        return (
            f"{named}: frozen ImageNet features, read once and cached, and a logistic-regression head solved to "
            f"convergence (L-BFGS), {chosen}{balance}{extras}; seed {config['seed']}. No epochs, optimizer or "
            "augmentation: the head sees each training photo's features once. Every field is in config.json."
        )
    return (
        f"{named}, {recipe['epochs']} epochs, {recipe['optimizer']} lr {recipe['lr']}, batch {recipe['batch_size']}, "
        f"augmentation `{recipe['augment']}`{extras}"
        + (f", pretrained backbone ({recipe['pretrained']})" if recipe.get("pretrained", "none") != "none" else "")
        + f"; seed {config['seed']}. Every field is in config.json."
    )
