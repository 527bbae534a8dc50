"""The one content-keyed disk cache: decoded images, probe features, distillation banks, and any cache
added later. An entry is found by a key made of what it was computed from (a file's bytes, an image's
pixels, a teacher and its views), so a stale entry is never used; everything about how entries are kept
lives here, once:

- read: `torch.load(weights_only=True)`, then the caller's check of what it holds;
- a damaged or foreign entry (unreadable, or failing the check) is never trusted: it is rebuilt, and
  the first damaged entry of each kind is said once on stderr;
- write: atomically (a temporary file renamed into place), so a killed process leaves no half entry;
- an unwritable cache (read-only, full disk) only costs time: the value is computed and not stored;
- `PASTURE_NO_CACHE=1` (core.defaults.cache_enabled) turns every cache off;
- `shared=True` builds an expensive entry once across processes (core.store.build_once): a process that
  reaches an entry another one is building waits for it.

Before this module each cache did this its own way: the decode cache warned about damage, the feature
cache recomputed silently, the distillation bank had its own lock and write (issue 28).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from pasture.core.defaults import cache_enabled, cache_root, warn_to_stderr
from pasture.core.runs import atomic_torch_save
from pasture.core.store import build_once

T = TypeVar("T")

_damage_said: set[str] = set()  # kinds whose first damaged entry was already said


class ContentCache:
    """Entries `<cache_root()>/<kind>/<key>.pt` (`fan_out`: `<key[:2]>/<key>.pt`, for caches of many
    small entries). `kind` names the cache in messages and is its folder."""

    def __init__(self, kind: str, *, fan_out: bool = False, root: Path | None = None, what: str | None = None):
        self.kind = kind
        self.fan_out = fan_out
        self.folder = (root or cache_root()) / kind
        self.what = what or f"{kind} cache"

    @property
    def enabled(self) -> bool:
        return cache_enabled()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.pt" if self.fan_out else self.folder / f"{key}.pt"

    def read(self, key: str, check: Callable[[Any], bool] | None = None) -> Any | None:
        """The entry's value, or None when there is none, the cache is off, or the entry is damaged or
        fails `check` (then it is said once per kind, and the caller rebuilds it)."""
        path = self.path(key)
        if not self.enabled or not path.is_file():
            return None
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
            if check is None or check(value):
                return value
        except Exception:  # unreadable, truncated, or not what this cache writes: never trusted
            pass
        self._say_damaged(path)
        return None

    def write(self, key: str, value: Any) -> None:
        """Store `value` atomically; an unwritable cache is skipped (it only costs time)."""
        if not self.enabled:
            return
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(value, path)
        except OSError:
            pass

    def get(
        self,
        key: str,
        build: Callable[[], T],
        *,
        check: Callable[[Any], bool] | None = None,
        to_stored: Callable[[T], Any] = lambda value: value,
        from_stored: Callable[[Any], T] = lambda stored: stored,
        shared: bool = False,
    ) -> T:
        """The stored value (through `from_stored`), else `build()`, stored (through `to_stored`) for the
        next time. `shared`: built once across processes, under the entry's lock."""
        if not self.enabled:
            return build()

        def read() -> T | None:
            stored = self.read(key, check)
            return None if stored is None else from_stored(stored)

        def build_and_store() -> T:
            value = build()
            self.write(key, to_stored(value))
            return value

        if shared:  # the lock is a folder of its own per entry: core.locks.folder_lock locks folders
            return build_once(self.folder / "locks" / key, read, build_and_store, self.what)
        found = read()
        return found if found is not None else build_and_store()

    def _say_damaged(self, path: Path) -> None:
        if self.kind not in _damage_said:
            _damage_said.add(self.kind)
            warn_to_stderr(
                f"{path}: a damaged {self.what} entry; computing it again (further damaged entries are "
                "replaced silently)"
            )
