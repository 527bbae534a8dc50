"""Keyword shorthands of the API's functions sorted into settings overrides and DataOptions."""

from __future__ import annotations

import dataclasses

from pasture.core.defaults import DataOptions, option_fields

_DATA_FIELDS = {f.name for f in dataclasses.fields(DataOptions)}


def sort_options(
    function: str, settings_type, overrides: dict | None, data_options: DataOptions | None, fields: dict
) -> tuple[dict, DataOptions]:
    """Sort keyword shorthands into (settings overrides, DataOptions): a field of `settings_type`
    (Recipe, GanPreset) goes to the overrides, a DataOptions field to the data options."""
    known = {f.name for f in option_fields(settings_type)}
    overrides = dict(overrides or {})
    data_changes = {}
    for key, value in fields.items():
        if key in known:
            overrides[key] = value
        elif key in _DATA_FIELDS:
            data_changes[key] = value
        else:
            raise TypeError(f"{function}() got an unexpected keyword argument {key!r}")
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"{function}(): unknown fields in overrides: {', '.join(unknown)}")
    options = data_options or DataOptions()
    return overrides, dataclasses.replace(options, **data_changes) if data_changes else options
