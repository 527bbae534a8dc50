"""The doctor's words and page: headline findings from a report dict, and doctor.html with thumbnails of
each finding (inline, so the one file can be mailed or attached to an issue)."""

from __future__ import annotations

import base64
import html
import io

from PIL import Image, ImageOps

from pasture.core.paths import printable_name

LISTED = 10  # findings listed by name in the text report; the page shows up to PAGE_LIMIT
PAGE_LIMIT = 60
THUMBNAIL = 112  # px


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _interval(row: dict) -> str:
    return f"{_pct(row['accuracy'])} (95% CI {_pct(row['ci95'][0])}-{_pct(row['ci95'][1])}, n={row['n']})"


def findings(report: dict) -> list[dict]:
    """[{"level": "problem"|"warning"|"ok", "check": ..., "text": one line}], worst first: what each of
    CHECKS says of the report."""
    lines: list[dict] = []
    for check, say in CHECKS.items():
        say(report, lambda level, text, check=check: lines.append({"level": level, "check": check, "text": text}))
    order = {"problem": 0, "warning": 1, "ok": 2}
    return sorted(lines, key=lambda line: order[line["level"]])


def _balance(report: dict, add) -> None:
    counts = report["counts"]
    if counts["imbalanced"]:
        totals = ", ".join(f"{name} {count}" for name, count in counts["totals"].items())
        add(
            "warning",
            f"classes are imbalanced ({totals}; {counts['imbalance_ratio']:.1f}x): accuracy "
            "rewards the larger class; read balanced accuracy, or train with --balance-classes",
        )


def _skipped(report: dict, add) -> None:
    if report["skipped"]:
        add("warning", f"{len(report['skipped'])} file(s) unusable and skipped (listed below)")


def _duplicates(report: dict, add) -> None:
    duplicates = report["duplicates"]
    conflicts, across = duplicates["counts"]["label conflict"], duplicates["counts"]["train/test"]
    if conflicts:
        add(
            "problem",
            f"{conflicts} pair(s) of near-identical photos carry different classes: one "
            "label is wrong, or the photo shows both",
        )
    if across:
        inflation = duplicates["inflation"]
        add(
            "problem",
            f"{inflation['test_images_with_train_copy']} of {inflation['n_test']} test photos "
            f"have a near-copy in train ({across} pair(s)): test accuracy could be up to "
            f"{100 * inflation['at_most']:.0f} points too high; remove one copy of each",
        )
    if duplicates["counts"]["within split"]:
        add(
            "warning",
            f"{duplicates['counts']['within split']} near-identical pair(s) within a class and "
            "split: the set holds fewer distinct photos than files",
        )
    if not (conflicts or across or duplicates["counts"]["within split"]):
        add("ok", f"no near-duplicates (pHash distance <= {duplicates['max_distance']} of 64 bits)")


def _shortcuts(report: dict, add) -> None:
    shortcuts = report["shortcuts"]
    combined = shortcuts["all"]
    if combined is None:
        add("warning", "too few images per class for a cross-validated shortcut probe")
    else:
        best = shortcuts["best_family"]
        best_text = (
            f"; alone, {shortcuts['descriptions'][best]} give {_interval(shortcuts['families'][best])}"
            if best is not None
            else ""
        )
        if shortcuts["flagged"]:
            add(
                "problem" if shortcuts["strong"] else "warning",
                f"trivial image statistics predict the class: {_interval(combined)} against {_pct(combined['chance'])} "
                f"by chance{best_text}: a model can score without looking at the subject",
            )
        else:
            add(
                "ok",
                f"trivial image statistics do not predict the class above chance: "
                f"{_interval(combined)}, chance {_pct(combined['chance'])}",
            )


def _groups(report: dict, add) -> None:
    groups = report.get("groups_check")
    if groups is not None:
        single = groups["single_class_groups"]
        if single:
            named = ", ".join(f"{printable_name(g)} (all {c})" for g, c in list(single.items())[:4])
            add(
                "problem" if len(single) == len(groups["table"]) else "warning",
                f"{len(single)} of {len(groups['table'])} sources hold one class only ({named}"
                f"{', ...' if len(single) > 4 else ''}; {groups['images_in_single_class_groups']} of {groups['n']} "
                "photos): there the source gives the label; measure on unseen sources (--split-by-group, "
                "experiment --folds groups)",
            )
        predictable = groups["group_from_statistics"]
        if predictable is not None and predictable["above_chance"]:
            add(
                "warning",
                f"trivial image statistics tell the sources apart: {_interval(predictable)} "
                f"against {_pct(predictable['chance'])} by chance",
            )


def _labels(report: dict, add) -> None:
    issues = report.get("label_issues")
    if issues is not None and "skipped" in issues:
        add("warning", f"label check skipped: {issues['skipped']}")
    elif issues is not None:
        model = "pretrained probe" if issues["model"] == "probe" else "from-scratch model"
        if issues["issues"]:
            add(
                "warning",
                f"{len(issues['issues'])} photo(s) whose label the out-of-fold {model} doubts "
                f"(its accuracy {_interval(issues)}): look at them first",
            )
        else:
            add("ok", f"no likely label errors (out-of-fold {model}: {_interval(issues)})")


def _strangers(report: dict, add) -> None:
    strangers = report.get("strangers")
    if strangers is not None and strangers["photos"]:
        add(
            "warning",
            f"{len(strangers['photos'])} photo(s) unlike the rest of their class (pretrained features, "
            f"{strangers['rule']}): a wrong file, another subject, or a view with no company; look at them",
        )
    elif strangers is not None:
        add("ok", f"no photo stands far from the rest of its class ({strangers['n_judged']} judged)")


# Each check's findings: (report, add(level, text)); in this order within a level.
CHECKS = {
    "balance": _balance,
    "skipped": _skipped,
    "duplicates": _duplicates,
    "shortcuts": _shortcuts,
    "groups": _groups,
    "labels": _labels,
    "strangers": _strangers,
}


def text_report(report: dict) -> str:
    """What `pasture doctor` prints: the counts, the findings and the first files of each."""
    files = report["files"]
    lines = [f"{report['data']}: {report['n']} images, {len(report['classes'])} classes ({report['layout']})"]
    for name, row in report["counts"]["per_class"].items():
        lines.append(f"  {name}: " + ", ".join(f"{split} {count}" for split, count in row.items()))
    sizes = report["sizes"]
    lines.append(
        f"  sizes: width {sizes['width']['min']:.0f}-{sizes['width']['max']:.0f} px (median "
        f"{sizes['width']['median']:.0f}), height {sizes['height']['min']:.0f}-{sizes['height']['max']:.0f} "
        f"(median {sizes['height']['median']:.0f}), aspect {sizes['aspect']['min']:.2f}-"
        f"{sizes['aspect']['max']:.2f}; " + ", ".join(f"{k} {v}" for k, v in sizes["formats"].items())
    )
    lines.append("findings:")
    for line in report["findings"]:
        lines.append(f"  [{line['level']}] {line['text']}")
    for row in report["skipped"][:LISTED]:
        lines.append(f"  skipped {printable_name(row['file'])}: {row['reason']}")
    pairs = [pair for pair in report["duplicates"]["pairs"] if pair["kind"] != "within split"]
    for pair in pairs[:LISTED]:
        lines.append(
            f"  {pair['kind']}: {printable_name(files[pair['a']])} ~ {printable_name(files[pair['b']])} "
            f"(distance {pair['distance']})"
        )
    if len(pairs) > LISTED:
        lines.append(f"  ... and {len(pairs) - LISTED} more pair(s) (doctor.json, doctor.html with --out)")
    shortcuts = report["shortcuts"]
    if shortcuts["all"] is not None:
        lines.append("shortcut probe (out-of-fold logistic regression on trivial statistics):")
        for name, row in shortcuts["families"].items():
            if row is not None:
                lines.append(f"  {shortcuts['descriptions'][name]}: {_interval(row)}")
    groups = report.get("groups_check")
    if groups is not None:
        lines.append(
            "sources (groups): "
            + "; ".join(
                f"{printable_name(g)}: " + ", ".join(f"{c} {n}" for c, n in row.items() if n)
                for g, row in groups["table"].items()
            )
        )
    issues = report.get("label_issues") or {}
    for row in issues.get("issues", [])[:LISTED]:
        lines.append(
            f"  look at {printable_name(files[row['index']])}: labelled {row['given']}, out-of-fold "
            f"p({row['given']}) = {row['given_probability']:.2f}"
        )
    for row in (report.get("strangers") or {}).get("photos", [])[:LISTED]:
        lines.append(
            f"  stranger in {report['classes'][report['labels'][row['index']]]}: "
            f"{printable_name(files[row['index']])} (distance {row['distance']:.3f}, robust z {row['robust_z']:.1f})"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The page


def _thumbnail(path: str) -> str:
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=80)
    except (OSError, ValueError):
        return "<span class='missing'>(unreadable)</span>"
    return f"<img src='data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}' alt=''>"


def _figure(path: str, name: str, caption: str) -> str:
    return (
        f"<figure>{_thumbnail(path)}<figcaption><code>{html.escape(printable_name(name))}</code><br>"
        f"{html.escape(caption)}</figcaption></figure>"
    )


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
    ".problem{color:#a40000}.warning{color:#8a5a00}.ok{color:#2d6a1f}"
    "figure{display:inline-block;margin:4px;width:150px;vertical-align:top;font-size:12px}"
    "figure img{max-width:112px;max-height:112px}.pair{border:1px solid #ddd;display:inline-block;margin:4px;"
    "padding:4px}code{word-break:break-all}"
)


def render_html(report: dict, paths: list[str]) -> str:
    """doctor.html: findings, counts, each near-duplicate pair, the shortcut table, sources with
    examples, and the photos to check for label errors; `paths` are the image files (for thumbnails)."""
    classes = report["classes"]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>pasture doctor</title><style>{STYLE}</style>"
        f"</head><body><h1>pasture doctor: {html.escape(printable_name(report['data']))}</h1>"
        f"<p>{report['n']} images, classes {html.escape(', '.join(classes))} ({report['layout']}).</p><ul>"
    ]
    parts += [f"<li class='{line['level']}'>{html.escape(line['text'])}</li>" for line in report["findings"]]
    parts.append("</ul>")
    for section in PAGE_SECTIONS:
        parts += section(report, paths)
    parts.append("</body></html>")
    return "\n".join(parts)


def _photo(report: dict, paths: list[str], index: int, caption: str) -> str:
    return _figure(paths[index], report["files"][index], caption)


def _counts_section(report: dict, paths: list[str]) -> list[str]:
    seen = {split for row in report["counts"]["per_class"].values() for split in row}
    split_names = [split for split in ("train", "test", "all") if split in seen]
    rows = [[name, *(row.get(s, 0) for s in split_names)] for name, row in report["counts"]["per_class"].items()]
    parts = ["<h2>Counts</h2>", _table(["class", *split_names], rows)]
    if report["skipped"]:
        skipped = [[printable_name(r["file"]), r["reason"]] for r in report["skipped"]]
        parts.append("<h2>Skipped files</h2>" + _table(["file", "reason"], skipped))
    return parts


def _duplicates_section(report: dict, paths: list[str]) -> list[str]:
    pairs, classes, labels = report["duplicates"]["pairs"], report["classes"], report["labels"]
    parts = [
        f"<h2>Near-duplicates ({len(pairs)} pair(s), pHash distance &lt;= {report['duplicates']['max_distance']})</h2>"
    ]
    for pair in pairs[:PAGE_LIMIT]:
        photos = "".join(
            _photo(report, paths, i, f"{classes[labels[i]]}, {report['splits'][i]}") for i in (pair["a"], pair["b"])
        )
        parts.append(
            f"<div class='pair'><b>{html.escape(pair['kind'])}</b>, distance {pair['distance']}<br>{photos}</div>"
        )
    return parts


def _shortcuts_section(report: dict, paths: list[str]) -> list[str]:
    shortcuts = report["shortcuts"]
    if shortcuts["all"] is None:
        return []
    rows = [["all together", _interval(shortcuts["all"]), _pct(shortcuts["all"]["chance"])]]
    rows += [
        [shortcuts["descriptions"][name], _interval(row), _pct(row["chance"])]
        for name, row in shortcuts["families"].items()
        if row is not None
    ]
    return [
        "<h2>Shortcut probe</h2><p>Out-of-fold accuracy of a logistic regression that sees only trivial "
        "statistics of each photo, never its subject. Far above chance means a model can score that way "
        "too.</p>",
        _table(["statistics", "accuracy predicting the class", "chance"], rows),
    ]


def _groups_section(report: dict, paths: list[str]) -> list[str]:
    groups, classes, labels = report.get("groups_check"), report["classes"], report["labels"]
    if groups is None:
        return []
    table = [[g, *(row[c] for c in classes)] for g, row in groups["table"].items()]
    parts = ["<h2>Sources (groups)</h2>", _table(["source", *classes], table)]
    for group in groups["table"]:
        members = [i for i, g in enumerate(report["groups"]) if g == group][:4]
        photos = "".join(_photo(report, paths, i, classes[labels[i]]) for i in members)
        parts.append(f"<div class='pair'><b>{html.escape(printable_name(group))}</b><br>{photos}</div>")
    return parts


def _labels_section(report: dict, paths: list[str]) -> list[str]:
    issues = (report.get("label_issues") or {}).get("issues")
    if not issues:
        return []
    return [f"<h2>Likely label errors ({len(issues)}, most doubtful first)</h2>"] + [
        _photo(
            report,
            paths,
            row["index"],
            f"labelled {row['given']}, p={row['given_probability']:.2f}; maybe {row['suggested']}",
        )
        for row in issues[:PAGE_LIMIT]
    ]


def _strangers_section(report: dict, paths: list[str]) -> list[str]:
    strangers, classes, labels = (report.get("strangers") or {}).get("photos", []), report["classes"], report["labels"]
    if not strangers:
        return []
    return [f"<h2>Unlike the rest of their class ({len(strangers)}, strangest first)</h2>"] + [
        _photo(
            report,
            paths,
            row["index"],
            f"{classes[labels[row['index']]]}: distance {row['distance']:.3f}, robust z {row['robust_z']:.1f}",
        )
        for row in strangers[:PAGE_LIMIT]
    ]


# The page's sections after the findings, in order: (report, paths) -> HTML parts.
PAGE_SECTIONS = (
    _counts_section,
    _duplicates_section,
    _shortcuts_section,
    _groups_section,
    _labels_section,
    _strangers_section,
)
