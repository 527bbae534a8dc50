"""The functions a notebook calls. The CLI and the app (pasture.app) are thin layers over these; nothing
below them (core, data, models, classify, gan, study, doctor) imports this module.

    from pasture import api
    metrics = api.train("DATA", "runs/first", recipe="paper", seed=1)
    metrics = api.train("DATA", "runs/long", overrides={"epochs": 120}, data_options=api.DataOptions(split_seed=3))
    report = api.evaluate("runs/first", "OTHER_PHOTOS")
    rows = api.predict("runs/first", ["photo.jpg"])

Options are data: `overrides` holds recipe fields (pasture.classify.recipes.Recipe; GAN preset fields
for gan_train), `data_options` a DataOptions. As a shorthand, any of those fields may also be given
as a keyword (`epochs=3`, `classes=["horse", "cow"]`).

Every function raises UserError (one line, names the file or option) for input a user can fix, and
Interrupted when Ctrl-C stopped a training run after its last checkpoint.

    options   keyword shorthands sorted into settings overrides and DataOptions
    training  train
    runs      evaluate, predict, load, explain, export, doctor
    gans      gan_train, gan_sample, gan_score
    studies   experiment, tune, demo
"""

from __future__ import annotations

from pasture.api.gans import gan_sample, gan_score, gan_train
from pasture.api.runs import doctor, evaluate, explain, export, load, predict
from pasture.api.studies import demo, experiment, tune
from pasture.api.training import train
from pasture.classify.new_camera import adapt, ask
from pasture.classify.recipes import resolve_recipe
from pasture.classify.trained import Classifier, LoadedRun, load_run
from pasture.core.defaults import DataOptions
from pasture.core.errors import Interrupted, UserError
from pasture.export.formats import EXPORT_FORMATS
from pasture.study.experiment import ExperimentOptions
from pasture.study.tune import TuneOptions

__all__ = [
    "EXPORT_FORMATS",
    "Classifier",  # the old name of LoadedRun, kept for a release
    "LoadedRun",
    "DataOptions",
    "ExperimentOptions",
    "TuneOptions",
    "Interrupted",
    "UserError",
    "adapt",
    "ask",
    "demo",
    "doctor",
    "evaluate",
    "experiment",
    "explain",
    "export",
    "gan_sample",
    "gan_score",
    "gan_train",
    "load",
    "load_run",
    "predict",
    "resolve_recipe",
    "train",
    "tune",
]
