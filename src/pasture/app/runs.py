"""The Runs page's endpoints: the list, a run's page (its numbers for the charts the page draws, its model
card rendered), its files, an export per format, delete and resume."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from pasture import api
from pasture.app.downloads import download_name, export_for_download, installed_formats, served_file
from pasture.app.jobs import Jobs, resumable
from pasture.app.state import AppState, existing_run, problem, run_folder
from pasture.classify.new_camera import ADAPTS
from pasture.classify.trained import run_config_problem
from pasture.core.errors import UserError
from pasture.core.record import record_problem
from pasture.core.runs import read_checked_json

RUN_FILES_SHOWN = {
    "curves.png": "image/png",
    "confusion.png": "image/png",
    "top_losses.png": "image/png",
    "MODEL_CARD.md": "text/markdown",
    **{served_file(name): "application/octet-stream" for name in api.EXPORT_FORMATS},  # the downloads
}

DOWNLOADS = {served_file(name): name for name in api.EXPORT_FORMATS}


def _run_summary(folder: Path, jobs: Jobs, charts: bool = False) -> dict:
    """A run's row on the Runs page; with `charts`, also what its page draws (_charts), from the same
    read of metrics.json. The one checked reader of run files: a damaged or hand-edited folder is a
    message, not a crash."""
    config = read_checked_json(folder / "config.json", run_config_problem, what="run folder")
    row = {
        "name": folder.name,
        "recipe": config["recipe"]["name"],
        "model": config["model"],
        # what Improve adapts: a probe, or a fine-tuned run (trained again with the photos it labels surely)
        "adaptable": config["recipe"].get("pretrained") in ADAPTS and "teacher" not in config,
        "classes": config["classes"],
        "finished": (folder / "metrics.json").is_file(),
        "training": jobs.training(folder.name),
        "resumable": resumable(folder.parent, folder.name),
        "figures": [
            name for name, kind in RUN_FILES_SHOWN.items() if kind == "image/png" and (folder / name).is_file()
        ],
    }
    if row["finished"]:
        metrics = read_checked_json(folder / "metrics.json", record_problem, what="finished run")
        row.update({key: metrics[key] for key in ("test_accuracy", "test_ci95", "n_test", "per_class")})
        if charts:
            row.update(_charts(metrics))
    return row


# The elements a model card may become in the page: what Markdown's headings, paragraphs, lists, tables
# and code give. Anything else (a link) keeps its text only.
CARD_TAGS = {
    "h1",
    "h2",
    "h3",
    "h4",
    "p",
    "ul",
    "ol",
    "li",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "pre",
    "code",
    "strong",
    "em",
}


def card_tree(markdown: str) -> list:
    """A model card's Markdown as a tree the page builds with DOM calls: [{"tag", "children"} or
    {"text"}], parsed by markdown-it-py (CommonMark and tables, raw HTML off). Text stays text all the
    way: the page never parses markup from data, so a class or file name holding markup is shown as it is."""
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    return _tree_children(SyntaxTreeNode(parser.parse(markdown)))


def _tree_children(node) -> list:
    out: list = []
    for child in node.children:
        if child.type in ("text", "code_inline", "fence", "code_block"):
            text = {"text": child.content}
            if child.type == "text":
                out.append(text)
            elif child.type == "code_inline":
                out.append({"tag": "code", "children": [text]})
            else:
                out.append({"tag": "pre", "children": [{"tag": "code", "children": [text]}]})
        elif child.type in ("softbreak", "hardbreak"):
            out.append({"text": "\n" if child.type == "hardbreak" else " "})
        elif child.type == "inline" or child.tag not in CARD_TAGS:
            out += _tree_children(child)  # its content, without an element of its own (a link's text)
        else:
            out.append({"tag": child.tag, "children": _tree_children(child)})
    return out


def _charts(metrics: dict) -> dict:
    """What a finished run's page draws: the confusion matrix, its curve (epochs: accuracy per epoch; a
    probe: held-out loss per C) and the accuracy on sources it never saw, when it has them."""
    keep = ("epoch", "train_accuracy", "test_accuracy")
    history = [{key: row[key] for key in keep if key in row} for row in metrics.get("history") or []]
    return {
        "confusion": metrics["confusion"],
        "history": history[-1000:],
        "head": (metrics.get("notes") or {}).get("head"),
        "unseen": metrics.get("unseen"),
    }


def run_routes(state: AppState) -> APIRouter:
    """Runs: list, details, files, export, delete, resume."""
    router = APIRouter()
    runs, jobs = state.runs, state.jobs

    @router.get("/api/runs")
    def list_runs():
        rows = []
        for folder in sorted(runs.iterdir()):
            if folder.is_dir() and not folder.name.startswith(".") and (folder / "config.json").is_file():
                try:
                    rows.append(_run_summary(folder, jobs))
                except UserError:
                    continue  # a damaged folder is left out of the list, not a crash
        return rows

    @router.get("/api/runs/{name}")
    def run_details(name: str):
        folder = existing_run(runs, name)
        summary = _run_summary(folder, jobs, charts=True)
        card = folder / "MODEL_CARD.md"
        summary["card"] = card.read_text(encoding="utf-8") if card.is_file() else ""
        summary["card_tree"] = card_tree(summary["card"])
        return summary

    @router.get("/api/runs/{name}/files/{file}")
    def run_file(name: str, file: str):
        folder = run_folder(runs, name)
        if file not in RUN_FILES_SHOWN or not (folder / file).is_file():
            return problem(404, f"{name}/{file}: not a file the app shows")
        download = download_name(name, DOWNLOADS[file]) if file in DOWNLOADS else None
        return FileResponse(folder / file, media_type=RUN_FILES_SHOWN[file], filename=download)

    @router.get("/api/formats")
    def formats():
        return installed_formats()

    @router.post("/api/runs/{name}/export")
    def export(name: str, format: str = "onnx"):
        # A POST: it writes the export (a GET that writes could be triggered by any page's <img>).
        folder = existing_run(runs, name)
        if not (folder / "metrics.json").is_file():
            raise UserError(f"{name}: not finished; resume it first")
        return export_for_download(folder, format)

    @router.delete("/api/runs/{name}")
    def delete(name: str):
        folder = existing_run(runs, name)
        jobs.delete(folder)
        state.live.forget(folder)
        return {"deleted": name}

    @router.post("/api/runs/{name}/resume")
    def resume(name: str):
        folder = existing_run(runs, name)
        if (folder / "metrics.json").is_file():
            raise UserError(f"{name}: already finished")
        if not resumable(runs, name):
            raise UserError(
                f"{name}: the app does not hold this run's photos (it was trained elsewhere, or they "
                "were removed); resume it with pasture train DATA --out RUN --resume"
            )
        job = jobs.start(folder, resume=True)
        return {"job": job["id"], "run": name, "epochs": job["epochs"]}

    return router
