"""Experiment reports: the results summarised, compared pair by pair and laid out as blocks, written as
report.md, a self-contained report.html, results.csv and results.json (study.documents renders them).

Both documents are rendered from one list of blocks (heading, paragraph, table, image), so they never
disagree. Figures are PNG files in DIR/figures/; the HTML embeds them as data URIs.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

from pasture.core.plots import plot_confusion, plot_curves, pyplot, save_figure
from pasture.core.runs import atomic_write_json, atomic_write_text, versions
from pasture.core.stats import difference_interval_text, mean_interval, paired_comparison, wilson_interval
from pasture.study.documents import html_document, markdown, results_csv


def _pct(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def summarise(conditions, replicates, results) -> tuple[list[dict], list[dict]]:
    """Per-condition statistics and paired comparisons of every condition against the first."""
    by_condition: dict[str, dict[int, dict]] = {}
    for row in results:
        by_condition.setdefault(row["condition"], {})[row["replicate"]["index"]] = row
    one_split = bool(replicates) and replicates[0].fold is None  # seeds on a fixed train/test split
    rows = []
    for condition in conditions:
        runs = [by_condition[condition.name][r.index] for r in replicates]
        records = [run["record"] for run in runs]
        accuracies = [record["test_accuracy"] for record in records]
        correct, n = sum(record["test_correct"] for record in records), sum(record["n_test"] for record in records)
        # Balanced accuracy: the mean of the per-class accuracies present, so that a held-out group with
        # one class, or a skewed test split, is not read as if the classes were balanced.
        balanced = [
            sum(row["accuracy"] for row in record["per_class"].values()) / len(record["per_class"])
            for record in records
        ]
        by_group: dict[str, list[float]] = {}
        balanced_by_group: dict[str, list[float]] = {}
        for run, value in zip(runs, balanced):
            if run["replicate"].get("group") is not None:
                by_group.setdefault(run["replicate"]["group"], []).append(run["record"]["test_accuracy"])
                balanced_by_group.setdefault(run["replicate"]["group"], []).append(value)
        # Leave-one-group-out: the unit is the held-out group, not the run. The seeds of one group share
        # its photos and its training part, so 3 seeds x 8 sources are 8 samples of "a new source", not
        # 24; intervals and paired tests are taken over the groups' means.
        units = [sum(values) / len(values) for _, values in sorted(balanced_by_group.items())]
        # Seeds on one split that all gave the same accuracy (a recipe the seed does not change): one
        # run repeated, not n. Its interval is the one run's Wilson interval on its test images, not the
        # zero-width interval of n equal numbers, nor a pooled one n times too narrow.
        same_every_seed = one_split and len(records) > 1 and len(set(accuracies)) == 1
        if same_every_seed:
            correct, n = records[0]["test_correct"], records[0]["n_test"]
        rows.append(
            {
                "condition": condition.name,
                "description": condition.description,
                "test": mean_interval(accuracies),
                "train": mean_interval([record["train_accuracy"] for record in records]),
                "balanced": mean_interval(balanced),
                "per_group": {group: mean_interval(values) for group, values in sorted(by_group.items())},
                "pooled_wilson95": list(wilson_interval(correct, n)),
                "n_per_run": records[0]["n_test"],
                "runs": len(runs),
                **({"same_every_seed": True} if same_every_seed else {}),
                "accuracies": accuracies,
                "seconds_per_run": sum(run["seconds"] for run in runs) / len(runs),
                **({"balanced_over_groups": mean_interval(units), "group_means": units} if units else {}),
            }
        )
    # Every pair (later condition against earlier one); the first of these are the baseline comparisons.
    paired = "group_means" if rows and "group_means" in rows[0] else "accuracies"  # one pair per held-out group
    # Repeated k-fold: the pairs are folds whose training parts overlap, so the test must say so.
    folds = replicates[0].folds if paired == "accuracies" and replicates and replicates[0].fold is not None else None
    unit = (
        "held-out group (balanced accuracy, seeds averaged)"
        if paired == "group_means"
        else f"fold of {folds}-fold cross-validation (training parts overlap: corrected test)"
        if folds
        else "run (seed)"
    )
    comparisons = [
        {
            "condition": rows[j]["condition"],
            "baseline": rows[i]["condition"],
            "unit": unit,
            **paired_comparison(rows[j][paired], rows[i][paired], folds=folds, seeds_of_one_split=one_split),
        }
        for i in range(len(rows))
        for j in range(i + 1, len(rows))
    ]
    return rows, comparisons


def _figure_accuracy(rows, num_classes: int, path: Path) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(max(4.5, 1.3 * len(rows) + 2), 3.4))
    for position, row in enumerate(rows):
        low, high = row["test"]["ci95"]
        mean = row["test"]["mean"]
        axis.errorbar(
            [position],
            [mean],
            yerr=[[mean - low if row["runs"] > 1 else 0], [high - mean if row["runs"] > 1 else 0]],
            fmt="o",
            capsize=5,
            color="tab:blue",
        )
        axis.scatter([position] * len(row["accuracies"]), row["accuracies"], s=10, color="tab:gray", alpha=0.6)
    # Guessing the most common class can beat this with unbalanced test splits; it is the floor of a
    # model that learned nothing on balanced ones.
    axis.axhline(
        1 / num_classes, color="tab:red", linewidth=0.8, linestyle=":", label=f"chance ({num_classes} classes)"
    )
    axis.set_xticks(range(len(rows)), [row["condition"] for row in rows], rotation=20, ha="right")
    axis.set_ylabel("test accuracy")
    axis.set_ylim(0, 1.02)
    axis.set_title("mean with 95% interval over runs; dots: single runs")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def _summary_blocks(spec, layout, data, replicates, rows) -> list:
    """The study's title, its design, the table of conditions, what its intervals mean, the held-out
    groups and what each condition is."""
    blocks: list = [
        ("h1", spec.title),
        (
            "p",
            f"Data: {data.root}. Design: {_design(spec, layout, replicates)}; every condition runs on the same "
            f"splits and seeds, and each is compared with {rows[0]['condition']} pair by pair.",
        ),
        _conditions_table(spec, rows),
        *_interval_notes(layout, rows),
        *_group_blocks(rows),
    ]
    described = [[row["condition"], row["description"]] for row in rows if row["description"]]
    if described:
        blocks.append(("table", ["condition", "what it is"], described))
    return blocks


def _design(spec, layout, replicates) -> str:
    if layout == "train/test":
        design = f"{len(replicates)} seeds on the fixed train/test split"
    elif replicates[0].group is not None:
        design = (
            f"leave one group out: each of {replicates[0].folds} groups (photo sources) is the test set once, "
            f"the model trained on the others, {spec.seeds} seed(s) ({len(replicates)} runs per condition)"
        )
    else:
        design = (
            f"{spec.seeds} repeats of stratified {replicates[0].folds}-fold cross-validation "
            f"({len(replicates)} runs per condition)"
        )
    return design


def _conditions_table(spec, rows) -> tuple:
    headers = [
        "condition",
        "test accuracy (mean +/- std)",
        "95% CI of the mean",
        "pooled Wilson 95% CI",
        "train accuracy",
        "runs x test images",
        "s/run",
    ]
    if spec.report_numbers:
        headers.append("the report")
    table = []
    for row in rows:
        low, high = row["test"]["ci95"]
        cells = [
            row["condition"],
            f"{_pct(row['test']['mean'])} +/- {_pct(row['test']['std'])}",
            "- (every seed the same run)"
            if row.get("same_every_seed")
            else f"{_pct(low)}-{_pct(high)}"
            if row["runs"] > 1
            else "-",
            f"{_pct(row['pooled_wilson95'][0])}-{_pct(row['pooled_wilson95'][1])}",
            _pct(row["train"]["mean"]),
            f"{row['runs']} x {row['n_per_run']}",
            f"{row['seconds_per_run']:.1f}",
        ]
        if spec.report_numbers:
            cells.append(spec.report_numbers.get(row["condition"], "-"))
        table.append(cells)
    return ("table", headers, table)


def _interval_notes(layout, rows) -> list:
    blocks: list = []
    varies = (
        "seed variation only: every run tests on the same split, so it says nothing of how another "
        "split or other photos would score"
        if layout == "train/test"
        else "seed and split variation"
    )
    blocks.append(
        (
            "p",
            "The pooled Wilson interval counts every test prediction of every run as a trial; the same "
            "test images are reused by each run, so it is narrower than the truth. The interval of the "
            f"mean over runs reflects {varies}.",
        )
    )
    if any(row.get("same_every_seed") for row in rows):
        blocks.append(
            (
                "p",
                "A condition marked 'every seed the same run' gave the same accuracy with every seed: the "
                "seed does not change it (a probe's head is fitted deterministically). Its runs are one "
                "run repeated, so its pooled Wilson interval is that one run's, and a comparison of two "
                "such conditions counts one pair, not one per seed.",
            )
        )
    return blocks


def _group_blocks(rows) -> list:
    blocks: list = []
    if not rows[0]["per_group"]:
        return blocks
    groups = list(rows[0]["per_group"])
    blocks.append(("h2", "On groups the model never saw (each held out in turn)"))
    blocks.append(
        (
            "table",
            ["condition", f"balanced accuracy, mean over the {len(groups)} groups (95% CI over groups)", *groups],
            [
                [
                    row["condition"],
                    f"{_pct(row['balanced_over_groups']['mean'])} ({_pct(row['balanced_over_groups']['ci95'][0])}"
                    f"-{_pct(row['balanced_over_groups']['ci95'][1])}, n={len(groups)} groups)",
                    *[_pct(row["per_group"][group]["mean"]) for group in groups],
                ]
                for row in rows
            ],
        )
    )
    blocks.append(
        (
            "p",
            "Each group's column is the accuracy on that group's photos when the model was trained "
            "without any of them (mean over seeds): the figure that says how a model does on photos "
            "from a new source. A group holding one class only measures that class. The interval is "
            "over groups, not runs: seeds of one group are not independent new sources, and the "
            "paired comparisons below pair group means for the same reason.",
        )
    )
    return blocks


def _comparison_blocks(rows, comparisons) -> list:
    def unit_word(c) -> str:
        return {"h": "groups", "f": "folds"}.get(c["unit"][0], "runs")

    def comparison_rows(selected):
        return [
            [
                c["condition"],
                c["baseline"],
                f"{c['mean_difference']:+.1%}",
                difference_interval_text(c["ci95"]),
                f"{c['p_value']:.3f}",
                f"{c['n_pairs']} {unit_word(c)}",
                c["verdict"],
            ]
            for c in selected
        ]

    corrected = bool(comparisons) and comparisons[0]["unit"].startswith("fold")
    headers = [
        "condition",
        "against",
        "mean difference",
        "95% CI (corrected t)" if corrected else "95% CI (bootstrap)",
        "p (corrected resampled t)" if corrected else "p (sign-flip)",
        "pairs",
        "verdict",
    ]
    blocks: list = []
    if comparisons:
        blocks.append(("p", f"Each pair is one {comparisons[0]['unit']}; the test is the {comparisons[0]['test']}."))
    against_baseline = [c for c in comparisons if c["baseline"] == rows[0]["condition"]]
    if against_baseline:
        blocks.append(("h2", f"Against {rows[0]['condition']} (paired)"))
        blocks.append(("table", headers, comparison_rows(against_baseline)))
    others = [c for c in comparisons if c["baseline"] != rows[0]["condition"]]
    if others:
        blocks.append(("h2", "Every other pair (paired; many comparisons: read single small p-values with care)"))
        blocks.append(("table", headers, comparison_rows(others)))
    return blocks


def figure_name(condition: str) -> str:
    """A file-name part for a condition's figures: its letters and digits, plus a short hash of the whole
    name, so that conditions differing only in other characters (a+b, a-b) never share a file."""
    readable = "".join(ch if ch.isalnum() else "_" for ch in condition)[:60]
    return f"{readable}_{hashlib.sha256(condition.encode()).hexdigest()[:6]}"


def _first_run_blocks(rows, replicates, results, figures: Path) -> list:
    """Learning curves, confusion matrix, top losses and GAN figures of each condition's first run."""
    blocks: list = [("h2", "Learning curves, confusion matrices and top losses (first run of each condition)")]
    first_index = replicates[0].index
    for row in rows:
        run = next(r for r in results if r["condition"] == row["condition"] and r["replicate"]["index"] == first_index)
        record = run["record"]
        safe = figure_name(row["condition"])
        if record["history"]:
            plot_curves(record["history"], figures / f"curves_{safe}.png", title=row["condition"])
            blocks.append(("img", figures / f"curves_{safe}.png", f"learning curves: {row['condition']}"))
        plot_confusion(
            record["confusion"],
            record["classes"],
            figures / f"confusion_{safe}.png",
            title=f"{row['condition']}: {record['test_correct']}/{record['n_test']}",
        )
        blocks.append(("img", figures / f"confusion_{safe}.png", f"confusion: {row['condition']}"))
        top_losses = figures.parent / "runs" / run["key"] / "top_losses.png"
        if top_losses.is_file():  # written by the run itself (it needs the model); absent in older results
            blocks.append(
                (
                    "img",
                    top_losses,
                    f"top losses: {row['condition']} (the test photos its first run got most confidently wrong)",
                )
            )
        if run.get("gan_dir"):
            gan_dir = Path(run["gan_dir"])
            blocks.append(("h3", f"GAN of {row['condition']} (first run)"))
            if (gan_dir / "gan_losses.png").is_file():
                blocks.append(("img", gan_dir / "gan_losses.png", "G and D losses"))
            per_class = sorted(gan_dir.glob("grid_*.png"))  # GANs trained since issue 30
            for grid in per_class:
                blocks.append(("img", grid, f"samples of class {grid.stem.removeprefix('grid_')}"))
            grids = [] if per_class else sorted(gan_dir.glob("samples_*.png"))
            for unit in sorted({path.name.split("_")[1] for path in grids}):
                last = [path for path in grids if path.name.split("_")[1] == unit][-1]
                blocks.append(("img", last, f"samples, {last.stem}"))
    return blocks


def _data_blocks(spec, data, seconds, ran) -> list:
    counts = data.summary()
    skipped = "; ".join(f"{s['file']} ({s['reason']})" for s in data.skipped) if data.skipped else "none"
    info = versions()
    return [
        ("h2", "Data"),
        (
            "table",
            ["split", *data.classes],
            [
                ["train", *[str(counts["train_counts"][name]) for name in data.classes]],
                *(
                    [["test", *[str(counts["test_counts"][name]) for name in data.classes]]]
                    if counts["test_counts"]
                    else []
                ),
            ],
        ),
        (
            "p",
            f"Images resized to {data.image_size} px for the first condition (each recipe uses its own size). "
            f"Skipped files: {skipped}.",
        ),
        ("h2", "Reproduce"),
        ("code", " ".join(spec.command) if spec.command else "(called from Python)"),
        (
            "p",
            f"{ran} runs computed now, the rest reused from {spec.out}/runs; {seconds:.0f} s. "
            + ", ".join(f"{key} {value}" for key, value in info.items()),
        ),
    ]


def _blocks(spec, layout, data, replicates, rows, comparisons, results, figures: Path, seconds, ran) -> list:
    _figure_accuracy(rows, len(data.classes), figures / "accuracy.png")
    return [
        *_summary_blocks(spec, layout, data, replicates, rows),
        *_comparison_blocks(rows, comparisons),
        ("h2", "Accuracy per condition"),
        ("img", figures / "accuracy.png", "test accuracy per condition"),
        *_first_run_blocks(rows, replicates, results, figures),
        *_data_blocks(spec, data, seconds, ran),
    ]


def write_report(spec, layout, data, replicates, results, ran: int, seconds: float) -> dict:
    """Write DIR/report.md, report.html, results.csv, results.json; return the results dict."""
    out = Path(spec.out)
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    rows, comparisons = summarise(spec.conditions, replicates, results)
    blocks = _blocks(spec, layout, data, replicates, rows, comparisons, results, figures, seconds, ran)
    atomic_write_text(out / "report.md", markdown(blocks, out))
    atomic_write_text(out / "report.html", html_document(blocks, spec.title))
    atomic_write_text(out / "results.csv", results_csv(results))
    summary = {
        "title": spec.title,
        "data": data.root,
        "layout": layout,
        "replicates": len(replicates),
        "conditions": rows,
        "comparisons": comparisons,
        "report_numbers": spec.report_numbers,
        "data_summary": data.summary(),
        "command": spec.command,
        "versions": versions(),
        "seconds": seconds,
        "runs_computed": ran,
    }
    atomic_write_json(out / "results.json", summary)
    return summary
