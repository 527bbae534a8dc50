"""Recipe search (pasture tune): candidates scored on folds of the training split only, paired.

- The test split is never loaded into a run: every candidate trains and is scored on the same K folds
  of the training split, with the same seeds (the same replicates), so candidates are compared pair by
  pair, as conditions of an experiment are. For DATA/<class>/ the training split is the one `train`
  makes with the same --test-fraction and --split-seed.
- Optuna proposes the candidates (its TPE sampler, seeded, asked and told in batches): a well-kept
  search library, light to install (ray[tune] pulls pyarrow and pandas, 600 MB), and its ask-and-tell
  interface lets pasture's own engines run each batch, locally or as Ray tasks. A trial is K folds x S
  seeds runs; its score is their mean balanced accuracy.
- Runs are stored as an experiment's are (DIR/runs/<key>/), so an interrupted search resumes: the
  seeded sampler, told the same stored scores, proposes the same candidates again.
- The best of N candidates on the folds it was chosen on is optimistic (the winner's curse), so it is
  compared with the starting recipe again on fresh folds and seeds (new repeats of the K-fold split),
  by the experiments' paired statistics. That comparison is the one to read; even it is only about the
  photo sources of the training split (see `pasture experiment --folds groups` for unseen sources).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

from pasture.classify.recipes import Recipe, recipe_file_text, resolve_recipe
from pasture.core.defaults import DEFAULT_MIN_IMAGE_SIZE, DEFAULT_TEST_FRACTION, option_fields
from pasture.core.errors import UserError
from pasture.core.extras import optional_import
from pasture.core.locks import locked_folder
from pasture.core.runs import atomic_write_json, atomic_write_text, read_option_json, versions
from pasture.data import load_dataset
from pasture.study.conditions import Condition, recipe_and_overrides
from pasture.study.design import kfold_replicates, study_tasks
from pasture.study.engines import Engine, run_tasks
from pasture.study.experiment import ExperimentSpec, StudyOptions, open_study_folder, start_engine
from pasture.study.report import summarise
from pasture.study.run import pending_tasks, stored_runs

# Recipe fields a search may set: the options of Recipe (not its name or description).
SEARCHABLE = {f.name for f in option_fields(Recipe)}
# What a search writes into its folder (glob patterns); --force removes only these.
TUNE_FILES = ("tune.json", "tune.md", "trials.csv", "best_recipe.json", "runs/*/result.json", "runs/*/top_losses.png")
EVAL_EVERY = 10**6  # a candidate's fold is scored at the first and last epoch only: the result is the same


@dataclass
class TuneSpec:
    data: str
    out: str
    space: str  # SPACE.json: {field: [choices] or {"low", "high", "log"?, "step"?}}
    recipe: str = "scratch"  # where the search starts, and what the best is compared with
    trials: int = 20
    folds: int = 3  # K of the K-fold split of the training split
    seeds: int = 2  # repeats of that split, each with its own seed
    batch: int | None = None  # trials proposed at once (default: enough to fill the engine)
    seed: int = 0  # the sampler's
    classes: list[str] | None = None
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE
    test_fraction: float = DEFAULT_TEST_FRACTION
    split_seed: int = 0
    engine: Engine | None = None
    device: str = "cpu"
    quiet: bool = False
    force: bool = False
    command: list[str] = field(default_factory=list)


@dataclass
class TuneOptions(StudyOptions):
    """What api.tune searches, from where, on which folds (see its docstring)."""

    space: str | None = None  # SPACE.json (required)
    recipe: str = "scratch"
    trials: int = 20
    folds: int = 3
    seeds: int = 2
    batch: int | None = None
    seed: int = 0
    classes: list[str] | None = None
    test_fraction: float = DEFAULT_TEST_FRACTION
    split_seed: int = 0
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE


def _optuna():
    optuna = optional_import("optuna", "pasture tune", "tune")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def read_space(path: str | Path, recipe: str) -> dict[str, dict]:
    """The search space, checked: every key a recipe field, every bound or choice a valid recipe.
    {field: {"choices": [...]}} or {field: {"low", "high", "log", "step", "integer"}}."""
    path = Path(path)
    raw = read_option_json(path, "--space", "search space (JSON)")
    if not isinstance(raw, dict) or not raw:
        raise UserError(
            f'--space {path}: give a JSON object such as {{"lr": {{"low": 1e-4, "high": 1e-2, "log": true}}, '
            '"augment": ["paper", "strong"]}'
        )
    space = {}
    for key, spec in raw.items():
        if key not in SEARCHABLE:
            raise UserError(f"--space {path}: {key!r} is not a recipe field (`pasture recipes` lists them)")
        if isinstance(spec, list) and spec:
            space[key] = {"choices": spec}
            probes = spec
        elif isinstance(spec, dict) and {"low", "high"} <= set(spec) and set(spec) <= {"low", "high", "log", "step"}:
            space[key] = _range(path, key, spec)
            probes = [space[key]["low"], space[key]["high"]]
        else:
            raise UserError(
                f'--space {path}: {key}: give a list of choices or {{"low": ..., "high": ...}} '
                '(with "log": true or "step": S if wanted)'
            )
        for value in probes:
            try:
                resolve_recipe(recipe, **{key: value})
            except (UserError, ValueError, TypeError) as error:
                raise UserError(f"--space {path}: {key}={value!r} is not a valid recipe: {error}") from None
    return space


WHOLE_NUMBER_FIELDS = {name for name, kind in typing.get_type_hints(Recipe).items() if kind is int}


def _range(path: Path, key: str, spec: dict) -> dict:
    """A numeric range of the space, checked by the rules Optuna would apply only once a trial asks
    (finite bounds, low < high, log needs low > 0 and no step, a positive step) and by the field's type
    (a whole-number field takes whole-number bounds and step): one line before any work."""
    where = f"--space {path}: {key}"

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if not (number(low) and number(high)) or not low < high:
        raise UserError(f"{where}: low and high must be finite numbers with low < high")
    if not isinstance(log, bool):
        raise UserError(f"{where}: log must be true or false")
    if log and low <= 0:
        raise UserError(f"{where}: a log range needs low > 0")
    if step is not None and (not number(step) or step <= 0):
        raise UserError(f"{where}: step must be a positive number")
    if log and step is not None:
        raise UserError(f"{where}: give log or step, not both (Optuna samples a log range without steps)")
    integer = key in WHOLE_NUMBER_FIELDS
    if integer and not all(isinstance(value, int) for value in (low, high, step if step is not None else 1)):
        raise UserError(f"{where}: {key} is a whole number; give whole-number low, high and step")
    if step is not None and not integer and abs(round((high - low) / step) * step - (high - low)) > 1e-9 * (high - low):
        raise UserError(f"{where}: step {step} does not divide high - low")
    return {
        "low": low if integer else float(low),
        "high": high if integer else float(high),
        "log": log,
        "step": step,
        "integer": integer,
    }


def suggest(trial, space: dict[str, dict]) -> dict:
    """A trial's candidate: one value per field of the space."""
    values = {}
    for key, spec in space.items():
        if "choices" in spec:
            values[key] = trial.suggest_categorical(key, spec["choices"])
        elif spec["integer"]:
            values[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec["step"] or 1, log=spec["log"])
        else:
            values[key] = trial.suggest_float(key, spec["low"], spec["high"], step=spec["step"], log=spec["log"])
    return values


def run_tune(spec: TuneSpec, warn=None) -> dict:
    optuna = _optuna()
    if spec.trials < 1:
        raise UserError(f"--trials {spec.trials}: must be at least 1")
    if spec.folds < 2:
        raise UserError(f"--folds {spec.folds}: needs at least 2 folds")
    base, file_overrides = recipe_and_overrides(spec.recipe)
    space = read_space(spec.space, spec.recipe)
    start_recipe = resolve_recipe(base, **dict(file_overrides))
    data = load_dataset(
        spec.data,
        start_recipe.image_size,
        classes=spec.classes,
        test_fraction=spec.test_fraction,
        split_seed=spec.split_seed,
        min_image_size=spec.min_image_size,
        warn=warn or (lambda message: None),
    )
    smallest = min(int((data.train.labels == label).sum()) for label in range(len(data.classes)))
    if smallest < spec.folds:
        raise UserError(
            f"--folds {spec.folds}: the training split has only {smallest} images of a class; "
            f"use at most {smallest} folds"
        )
    out = Path(spec.out)
    # --jobs auto is the same on the same machine, so a resumed search runs as the first one did
    engine = start_engine(_experiment_spec(spec, []), None)
    with locked_folder(out, "tune"):  # the lock first: --force on a live search deletes nothing
        open_study_folder(out, spec.force, "tune.json", "tune", TUNE_FILES)
        atomic_write_json(out / "tune.json", {"status": "running", "command": spec.command})
        return _search(spec, optuna, out, data, space, base, file_overrides, engine, warn)


def _experiment_spec(spec: TuneSpec, conditions: list[Condition]) -> ExperimentSpec:
    return ExperimentSpec(
        data=spec.data,
        out=spec.out,
        conditions=conditions,
        seeds=spec.seeds,
        folds=spec.folds,
        classes=spec.classes,
        min_image_size=spec.min_image_size,
        eval_every=EVAL_EVERY,
        quiet=spec.quiet,
        device=spec.device,
        engine=spec.engine,
        split=(spec.test_fraction, spec.split_seed),
    )


def _condition(name: str, base: str, file_overrides: list, values: dict) -> Condition:
    overrides = [pair for pair in file_overrides if pair[0] not in values] + sorted(values.items())
    return Condition(name=name, recipe=base, overrides=tuple(overrides))


def _score(spec, out, data, conditions, replicates, engine, warn, desc: str) -> tuple[list[dict], list[dict]]:
    """Run (or find stored) every condition on every replicate; summarise's (rows, comparisons)."""
    tasks = study_tasks(
        _experiment_spec(spec, conditions), data.layout, data.fingerprint, replicates, engine.threads_per_run()
    )
    stored = stored_runs(out, tasks, warn)
    todo = pending_tasks(tasks, stored)
    stored.update(run_tasks(engine, todo, len(stored), spec.quiet, out, desc=desc))
    results = [{**(stored[task.key] or {}), "condition": task.condition.name} for task in tasks]
    return summarise(conditions, replicates, results)


def _search(spec, optuna, out, data, space, base, file_overrides, engine, warn) -> dict:
    search = kfold_replicates(spec.folds, range(spec.seeds))
    start = _condition("start", base, file_overrides, {})
    (start_row,), _ = _score(spec, out, data, [start], search, engine, warn, desc="tune: start")
    trials = _trials(spec, optuna, out, data, space, base, file_overrides, engine, warn, search, start_row)
    best = max(trials, key=_rank)
    # A candidate that does not score above the start on the search folds is not handed over: the
    # recipe file is then the starting recipe, and the result says so.
    improved = best["balanced"]["mean"] > start_row["balanced"]["mean"]
    best_condition = _condition("best", base, file_overrides, best["values"] if improved else {})
    # The same two on the search folds (where the best was chosen: optimistic) and on fresh folds and
    # seeds (repeats the search never used): the second is the honest comparison.
    _, (searched,) = _score(spec, out, data, [start, best_condition], search, engine, warn, "tune: best vs start")
    fresh = kfold_replicates(spec.folds, range(spec.seeds, 2 * spec.seeds))
    fresh_rows, (confirmed,) = _score(
        spec, out, data, [start, best_condition], fresh, engine, warn, "tune: confirming on fresh folds"
    )
    best_recipe = _best_recipe(spec, data, base, best_condition, improved, confirmed)
    atomic_write_text(out / "best_recipe.json", recipe_file_text(best_recipe, base, best_recipe.description))
    result = {
        "status": "done",
        "command": spec.command,
        "versions": versions(),
        "data": str(Path(spec.data).resolve()),
        "recipe": spec.recipe,
        "space": space,
        "trials_asked": spec.trials,
        "folds": spec.folds,
        "seeds": spec.seeds,
        "n_train": len(data.train),
        "n_validation_per_run": len(data.train) // spec.folds,
        "score": "mean balanced accuracy over the folds x seeds of the training split",
        "start": {"balanced": start_row["balanced"], "test": start_row["test"]},
        "trials": trials,
        "best": best,
        "improved": improved,
        "best_vs_start_on_search_folds": searched,
        "best_vs_start_on_fresh_folds": confirmed,
        "fresh_folds": {row["condition"]: {"balanced": row["balanced"], "test": row["test"]} for row in fresh_rows},
        "best_recipe": str(out / "best_recipe.json"),
    }
    atomic_write_text(out / "trials.csv", _trials_csv(trials, space))
    atomic_write_text(out / "tune.md", tune_text(result))
    atomic_write_json(out / "tune.json", result)  # last: marks the search as done
    return result


def _trials(spec, optuna, out, data, space, base, file_overrides, engine, warn, search, start_row) -> list[dict]:
    """Optuna's TPE, ask and tell, `batch` trials at a time (each one condition scored on the search
    folds): one row per trial with its values and scores."""
    runs_per_trial = len(search)
    batch = spec.batch or max(1, math.ceil(engine.parallel() / runs_per_trial))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=spec.seed))
    trials: list[dict] = []
    while len(trials) < spec.trials:
        asked = [study.ask() for _ in range(min(batch, spec.trials - len(trials)))]
        candidates = [(trial, suggest(trial, space)) for trial in asked]
        conditions = [
            _condition(f"trial{trial.number:03d}", base, file_overrides, values) for trial, values in candidates
        ]
        rows, _ = _score(
            spec,
            out,
            data,
            conditions,
            search,
            engine,
            warn,
            desc=f"tune: trials {len(trials) + 1}-{len(trials) + len(asked)} of {spec.trials}",
        )
        for (trial, values), row in zip(candidates, rows):
            study.tell(trial, row["balanced"]["mean"])
            trials.append({"trial": trial.number, "values": values, "balanced": row["balanced"], "test": row["test"]})
        if not spec.quiet:
            best_so_far = max(trials, key=_rank)
            print(
                f"tune: {len(trials)}/{spec.trials} trials; best so far trial {best_so_far['trial']} "
                f"{best_so_far['balanced']['mean']:.1%} (start {start_row['balanced']['mean']:.1%})",
                file=sys.stderr,
                flush=True,
            )
    return trials


def _best_recipe(spec, data, base: str, best_condition, improved: bool, confirmed: dict):
    """The recipe file's recipe: the best trial's fields (or the start's when none scored above it),
    named tuned-<base>, its description saying how it was found and how it compared on fresh folds."""
    best_recipe = resolve_recipe(base, **dict(best_condition.overrides))
    if improved:
        note = (
            f"pasture tune: best of {spec.trials} trials from {spec.recipe} on {spec.folds}-fold x {spec.seeds} "
            f"validation of {data.root}'s training split; on fresh folds vs {spec.recipe}: "
            f"{confirmed['mean_difference']:+.1%} [{confirmed['ci95'][0]:+.1%}, {confirmed['ci95'][1]:+.1%}], "
            f"{confirmed['verdict']}"
        )
    else:
        note = f"pasture tune: none of {spec.trials} trials scored above {spec.recipe}; this is {spec.recipe} itself"
    return dataclasses.replace(best_recipe, name=f"tuned-{base}", description=note)


def _rank(trial: dict) -> tuple:
    """The best trial: the highest score; between equal scores, the earliest."""
    return trial["balanced"]["mean"], -trial["trial"]


def _trials_csv(trials: list[dict], space: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial", *space, "balanced_mean", "balanced_ci_low", "balanced_ci_high", "runs"])
    for trial in trials:
        writer.writerow(
            [
                trial["trial"],
                *(trial["values"][key] for key in space),
                f"{trial['balanced']['mean']:.4f}",
                f"{trial['balanced']['ci95'][0]:.4f}",
                f"{trial['balanced']['ci95'][1]:.4f}",
                trial["balanced"]["n"],
            ]
        )
    return buffer.getvalue()


def _cell(interval: dict) -> str:
    low, high = interval["ci95"]
    return f"{interval['mean']:.1%} (95% CI {low:.1%}-{high:.1%}, n={interval['n']} runs)"


def tune_text(result: dict) -> str:
    """What `pasture tune` prints and writes to tune.md."""
    ranked = sorted(result["trials"], key=_rank, reverse=True)
    lines = [
        f"# pasture tune: {result['recipe']} on {result['data']}",
        "",
        f"Score: {result['score']} ({result['folds']} folds x {result['seeds']} seeds = "
        f"{result['folds'] * result['seeds']} runs per candidate, about {result['n_validation_per_run']} "
        f"validation photos each, from {result['n_train']} training photos; the test split was never used).",
        "",
        f"start ({result['recipe']}): {_cell(result['start']['balanced'])}",
        "",
        "| trial | " + " | ".join(result["space"]) + " | balanced accuracy |",
        "|---" * (len(result["space"]) + 2) + "|",
    ]
    for trial in ranked[:10]:
        values = " | ".join(_value(trial["values"][key]) for key in result["space"])
        lines.append(f"| {trial['trial']} | {values} | {_cell(trial['balanced'])} |")
    searched, confirmed = result["best_vs_start_on_search_folds"], result["best_vs_start_on_fresh_folds"]
    if not result["improved"]:
        lines += [
            "",
            f"No candidate scored above the start on the search folds (the highest: trial "
            f"{result['best']['trial']}); best_recipe.json is {result['recipe']} itself.",
        ]
        lines += [f"Recipe file: {result['best_recipe']}"]
        return "\n".join(lines) + "\n"
    lines += [
        "",
        f"Best: trial {result['best']['trial']}. Best vs start:",
        f"- on the folds it was chosen on (optimistic): {_difference(searched)}",
        f"- on fresh folds and seeds (read this one): {_difference(confirmed)}",
        "",
        f"Recipe file: {result['best_recipe']} (pasture train DATA --recipe {result['best_recipe']}). These "
        "folds hold the training split's photo sources; whether the gain holds on sources the model never "
        "saw is a leave-one-source-out experiment: pasture experiment DATA --folds groups --groups FILE.csv "
        f"--conditions {result['recipe']} tuned:recipe={result['best_recipe']}",
    ]
    return "\n".join(lines) + "\n"


def _value(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _difference(comparison: dict) -> str:
    low, high = comparison["ci95"]
    return (
        f"{comparison['mean_difference']:+.1%} [{low:+.1%}, {high:+.1%}], p={comparison['p_value']:.3f}, "
        f"{comparison.get('n_pairs', '')} pairs: {comparison['verdict']}"
    )
