"""How far a recipe travels: `python benchmarks/recipe_trace.py [--recipe probe|scratch]` traces one small
`api.train` (generated photos) and follows the chosen Recipe object: every function called with it as an
argument, in call order. It prints the files entered, how often the trail climbs back up (a call made
from a file nearer the API than the file the previous such call was made in: the path went down, came
back up and went down again), and the most values a function took beside the recipe. Issue 44 asked for
fewer files and climbs than at 67edebc (18 and 11 by reading); run this script on both commits to compare
(it records the commit it ran on). The recipe's own methods (to_dict) are not counted as it travelling.
JSON: benchmarks/results/recipe_trace_<recipe>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pasture
from pasture import api
from pasture.classify import recipes

ROOT = Path(pasture.__file__).resolve().parent
FLOORS = {"core": 0, "data": 1, "models": 1, "classify": 2, "gan": 3, "doctor": 3, "export": 3, "study": 4}


def floor(path: str) -> int:
    part = Path(path).resolve().relative_to(ROOT).parts[0].removesuffix(".py")
    return FLOORS.get(part, 5)


def trace(recipe_name: str) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import write_split_data

    chosen: list = []
    real = recipes.resolve_recipe

    def remember(*args, **kwargs):
        recipe = real(*args, **kwargs)
        chosen.append(recipe)
        return recipe

    calls: list[tuple[str, str, int]] = []

    def tracer(frame, event, arg):
        if event != "call" or not chosen or not frame.f_code.co_filename.startswith(str(ROOT)):
            return None
        values = frame.f_locals
        names = frame.f_code.co_varnames[: frame.f_code.co_argcount + frame.f_code.co_kwonlyargcount]
        # the recipe's own methods (to_dict, recorded) are not it travelling: `self` is left out
        if any(values.get(name) is chosen[-1] for name in names if name != "self"):
            caller = frame.f_back.f_code.co_filename if frame.f_back else ""
            calls.append((frame.f_code.co_filename, caller, len(names) - 1))
        return None

    for module in list(sys.modules.values()):  # wherever it was imported by name (api.py, or api/training.py)
        if getattr(module, "__name__", "").startswith("pasture") and getattr(module, "resolve_recipe", None) is real:
            module.resolve_recipe = remember
    with tempfile.TemporaryDirectory() as folder:
        data = write_split_data(Path(folder) / "data")
        extra = {} if recipe_name == "probe" else {"epochs": 1, "image_size": 16}
        sys.setprofile(tracer)
        try:
            api.train(data, Path(folder) / "run", recipe=recipe_name, quiet=True, **extra)
        finally:
            sys.setprofile(None)
    files = list(dict.fromkeys(str(Path(f).relative_to(ROOT)) for f, _, _ in calls))
    callers = [c for _, c, _ in calls if c.startswith(str(ROOT))]
    climbs = sum(1 for a, b in zip(callers, callers[1:]) if floor(b) > floor(a))
    return {
        "recipe": recipe_name,
        "path": [f"{Path(c).parent.name}/{Path(c).name} -> {Path(f).parent.name}/{Path(f).name}" for f, c, _ in calls],
        "files": files,
        "n_files": len(files),
        "climbs": climbs,
        "most_other_values": max((n for _, _, n in calls), default=0),
        "calls": len(calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="probe", choices=["probe", "scratch"])
    args = parser.parse_args()
    result = trace(args.recipe)
    where = ROOT.parents[1]
    result["commit"] = subprocess.run(
        ["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip() or str(where)
    print(
        f"recipe {result['recipe']} at {result['commit']}: {result['n_files']} files entered, {result['climbs']} climbs "
        f"back up, at most {result['most_other_values']} values beside it, {result['calls']} calls"
    )
    for step in result["path"]:
        print(f"  {step}")
    out = Path(__file__).resolve().parent / "results" / f"recipe_trace_{args.recipe}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
