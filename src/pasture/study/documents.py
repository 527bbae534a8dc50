"""A study's report as documents: one list of blocks (heading, paragraph, code, table, image) rendered as
Markdown and as one self-contained HTML page (figures embedded as data URIs), so the two never disagree;
and results.csv, a row per run."""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path


def markdown(blocks, out: Path) -> str:
    lines = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "code":
            lines += ["```", block[1], "```", ""]
        elif kind == "table":
            headers, body = block[1], block[2]
            lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(cells) + " |" for cells in body] + [""]
        elif kind == "img":
            try:
                target = block[1].relative_to(out)
            except ValueError:
                target = block[1]
            lines += [f"![{block[2]}]({target})", ""]
    return "\n".join(lines)


def html_document(blocks, title: str) -> str:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
        "img{max-width:100%}code,pre{background:#f4f4f4;padding:4px}</style></head><body>",
    ]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "code":
            parts.append(f"<pre>{html.escape(block[1])}</pre>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(cell)}</th>" for cell in block[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in block[2]
            )
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "img":
            data = base64.b64encode(Path(block[1]).read_bytes()).decode()
            parts.append(
                f"<figure><img alt='{html.escape(block[2])}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(block[2])}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def results_csv(results) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "condition",
            "replicate",
            "seed",
            "repeat",
            "fold",
            "test_accuracy",
            "correct",
            "n",
            "train_accuracy",
            "n_synthetic",
            "seconds",
        ]
    )
    for row in results:
        replicate, record = row["replicate"], row["record"]
        writer.writerow(
            [
                row["condition"],
                replicate["index"],
                replicate["seed"],
                replicate["repeat"],
                "" if replicate["fold"] is None else replicate["fold"],
                f"{record['test_accuracy']:.6f}",
                record["test_correct"],
                record["n_test"],
                f"{record['train_accuracy']:.6f}",
                row["n_synthetic"],
                f"{row['seconds']:.2f}",
            ]
        )
    return buffer.getvalue()
