"""RunRecord: what one finished classifier run scored, in one shape wherever it is stored.

A run folder's metrics.json and an experiment's runs/<key>/result.json ("record") hold this record, so
every reader (the CLI, reports, the app, benchmarks) reads one schema. Pure data: no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from pasture.core.runs import FolderKind

RECORD_FORMAT = 2  # 1: metrics.json and result.json had different keys (per_class/test_per_class, n_test/n)


@dataclass
class RunRecord:
    classes: list[str]
    model: str
    recipe: str  # the recipe's name; a run folder's config.json holds every field
    test_accuracy: float
    test_ci95: list[float]  # Wilson 95% interval
    n_test: int
    test_correct: int
    per_class: dict  # {class: {"accuracy", "ci95", "n"}} on the test split
    confusion: list[list[int]]  # test split; rows: true class, columns: predicted
    train_accuracy: float  # the un-augmented training images, without TTA
    train_ci95: list[float]
    n_train: int
    train_confusion: list[list[int]]
    epochs: int  # epochs trained (all ensemble members together)
    final_train_loss: float | None
    train_seconds: float
    diverged: bool  # the training loss became NaN or infinite
    tta: bool
    ensemble: int
    history: list[dict] = field(default_factory=list)  # one row per epoch, as history.jsonl
    notes: dict = field(default_factory=dict)  # path-specific facts, e.g. a probe's feature-cache hits
    # When groups (photo sources) are known: test accuracy per group, and on the test groups the
    # training split never had ({"accuracy", "ci95", "n", "groups"}; None when every test group was seen).
    per_group: dict = field(default_factory=dict)
    unseen: dict | None = None

    def to_dict(self) -> dict:
        return {"format": RECORD_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> RunRecord:
        """The record stored as `data`; ValueError when it is not a record of this format."""
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise ValueError(f"not a run record of format {RECORD_FORMAT}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        optional = ("history", "notes", "per_group", "unseen")
        missing = sorted(name for name in fields if name not in data and name not in optional)
        if missing:
            raise ValueError(f"run record lacks {', '.join(missing)}")
        for name, value in data.items():
            if name in fields and not _has_type(value, str(fields[name].type)):
                raise ValueError(f"run record field {name} is {type(value).__name__}, not {fields[name].type}")
        return cls(**{key: value for key, value in data.items() if key in fields})


_TYPES: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "float": (int, float),
    "bool": bool,
    "str": str,
    "list": list,
    "dict": dict,
}


def _has_type(value, annotation: str) -> bool:
    """Whether a value read from JSON fits a field's annotation (outer type only: "list[float]" -> list)."""
    if annotation.endswith(" | None"):
        if value is None:
            return True
        annotation = annotation[: -len(" | None")]
    expected = _TYPES[annotation.split("[")[0]]
    if expected in (int, (int, float)) and isinstance(value, bool):
        return False
    return isinstance(value, expected)


def record_problem(data: dict) -> str | None:
    """The schema of a stored RunRecord (metrics.json), for pasture.core.runs.read_checked_json."""
    try:
        RunRecord.from_dict(data)
    except (TypeError, ValueError) as error:
        return str(error)
    return None


RUN_FOLDER = FolderKind("run", "metrics.json", record_problem)  # a classifier's run folder, to opened_run
