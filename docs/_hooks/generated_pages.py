"""MkDocs hook: pages generated at build time, so that they cannot drift from their source.

- `cli.md`: every command's --help, from pasture's own argparse parser (`pasture.cli.command_parsers`).
- `changelog.md`: CHANGELOG.md at the repository's root.
- the module map in `architecture.md` (the `<!-- module map -->` marker): every module of src/pasture with
  the first sentence of its docstring.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
HELP_WIDTH = "100"  # argparse wraps at $COLUMNS: fixed, so the page is the same on every machine


def cli_reference() -> str:
    os.environ["COLUMNS"] = HELP_WIDTH
    from pasture.cli import command_parsers

    parts = [
        "# Command-line reference\n\n",
        "Generated from pasture's own parser when the docs are built: it is exactly what `--help` prints. "
        "For what each command is for and what it writes, see [Commands: a guide](commands.md).\n",
    ]
    for name, parser in command_parsers():
        parts.append(f"\n## `{name}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "".join(parts)


def module_map() -> str:
    source = ROOT / "src" / "pasture"
    rows = ["| module | lines | what it holds |", "|---|---|---|"]
    for path in sorted(source.rglob("*.py")):
        text = path.read_text()
        doc = (ast.get_docstring(ast.parse(text)) or "").split("\n\n")[0].replace("\n", " ")
        name = ".".join(path.relative_to(source.parent).with_suffix("").parts).removesuffix(".__init__")
        rows.append(f"| `{name}` | {len(text.splitlines())} | {doc.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown, page, config, files):
    return markdown.replace("<!-- module map -->", module_map()) if "<!-- module map -->" in markdown else markdown


def on_files(files, config):
    files.append(File.generated(config, "cli.md", content=cli_reference()))
    files.append(File.generated(config, "changelog.md", content=(ROOT / "CHANGELOG.md").read_text()))
    return files
