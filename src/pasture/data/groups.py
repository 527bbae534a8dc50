"""Groups (photo sources: a camera, a farm, a website) per image, read from a table or from folders.

A model trained on a few photos readily learns the photo source instead of the subject, so accuracy
per source, and on sources a model never saw, is the figure that says how it will do elsewhere.

    --groups FILE.csv [--group-column COLUMN]   columns `file` (relative to DATA) and COLUMN
    --groups subfolders                          DATA/<class>/<group>/*.jpg
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from pasture.core.errors import UserError
from pasture.core.paths import printable_name

SUBFOLDERS = "subfolders"


def read_group_table(table: str | Path, column: str) -> dict[str, str]:
    """{file relative to DATA, as a/b/c.jpg: group} from a CSV with a `file` column and `column`."""
    table = Path(table)
    if not table.is_file():
        raise UserError(f"--groups {table}: no such file; give a CSV with columns file,{column} (or subfolders)")
    try:
        with open(table, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if "file" not in columns or column not in columns:
                raise UserError(
                    f"--groups {table}: needs the columns file and {column} (--group-column); it has "
                    f"{', '.join(columns) or 'none'}"
                )
            return {str(PurePosixPath(row["file"].strip())): row[column].strip() for row in reader if row["file"]}
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"--groups {table}: not a readable CSV ({error})") from None


def groups_of(files: list[str], root: Path, groups: str, column: str = "group") -> list[str]:
    """The group of each image file (paths as loaded, under `root`, the DATA folder). Every file must
    have one: files a table does not list are a UserError naming how many and the first."""
    root = Path(root)
    if groups == SUBFOLDERS:
        found = []
        for file in files:
            path = Path(file)
            if path.parent.parent.parent != root:
                raise UserError(f"--groups subfolders: {printable_name(path)} is not in DATA/<class>/<group>/")
            found.append(path.parent.name)
        return found
    table = read_group_table(groups, column)
    relative = [str(PurePosixPath(Path(file).relative_to(root).as_posix())) for file in files]
    missing = [name for name in relative if name not in table or not table[name]]
    if missing:
        raise UserError(
            f"--groups {groups}: {len(missing)} image(s) have no {column} there, e.g. {missing[0]}; add "
            "a row for each (file relative to DATA)"
        )
    return [table[name] for name in relative]
