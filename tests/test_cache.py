"""core.cache: the one content-keyed disk cache behind decoded images, probe features and distillation
banks: damaged entries are rebuilt and said once, writes are atomic, an unwritable or disabled cache
only costs time."""

import os

import pytest
import torch

from pasture.classify.features import FeatureCache
from pasture.core import cache as cache_module
from pasture.core.cache import ContentCache


@pytest.fixture(autouse=True)
def fresh_damage_memory(monkeypatch):
    monkeypatch.setattr(cache_module, "_damage_said", set())


def test_a_value_is_built_once_then_read_back(tmp_path):
    cache = ContentCache("things", root=tmp_path)
    builds = []

    def build():
        builds.append(1)
        return torch.arange(4)

    first = cache.get("abc", build)
    second = cache.get("abc", build)
    assert torch.equal(first, second) and len(builds) == 1
    assert cache.path("abc") == tmp_path / "things" / "abc.pt" and cache.path("abc").is_file()
    assert ContentCache("things", root=tmp_path, fan_out=True).path("abc") == tmp_path / "things" / "ab" / "abc.pt"


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_damaged_or_foreign_entry_is_rebuilt_and_said_once_per_kind(tmp_path, capsys, damage):
    cache = ContentCache("things", root=tmp_path, what="thing-cache")
    check = lambda value: isinstance(value, torch.Tensor) and value.shape == (4,)  # noqa: E731
    for key in ("a", "b"):
        cache.write(key, torch.arange(4))
        if damage == "truncated":
            cache.path(key).write_bytes(cache.path(key).read_bytes()[:20])
        else:
            torch.save({"not": "a tensor"}, cache.path(key))
    rebuilt = [cache.get(key, lambda: torch.ones(4), check=check) for key in ("a", "b")]
    assert all(torch.equal(value, torch.ones(4)) for value in rebuilt)
    assert torch.equal(cache.read("a", check), torch.ones(4))  # the rebuilt entry replaced the damaged one
    err = capsys.readouterr().err
    assert err.count("damaged thing-cache entry") == 1 and "things" in err


def test_an_unwritable_cache_only_costs_time(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    cache = ContentCache("things", root=blocker)
    assert torch.equal(cache.get("k", lambda: torch.zeros(2)), torch.zeros(2))
    assert cache.read("k") is None


def test_a_disabled_cache_reads_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PASTURE_NO_CACHE", "1")
    cache = ContentCache("things", root=tmp_path)
    assert torch.equal(cache.get("k", lambda: torch.zeros(2)), torch.zeros(2))
    assert not (tmp_path / "things").exists()


def test_a_shared_entry_is_built_under_its_lock_and_read_by_the_next_process(tmp_path):
    cache = ContentCache("banks", root=tmp_path)
    value = cache.get("key", lambda: {"x": torch.ones(1)}, shared=True)
    assert value["x"].item() == 1 and cache.path("key").is_file()
    again = cache.get("key", lambda: pytest.fail("built twice"), shared=True)
    assert again["x"].item() == 1


def test_probe_features_obey_the_no_cache_setting(tmp_path, monkeypatch):
    """Before core.cache, the feature cache wrote and reused files even with PASTURE_NO_CACHE=1."""
    monkeypatch.setenv("PASTURE_NO_CACHE", "1")

    class Net(torch.nn.Module):  # stands in for a timm backbone
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(1))

        def forward_features(self, images):
            return images

        def forward_head(self, features, pre_logits=True):
            return features.mean(dim=(2, 3))

    class Backbone(torch.nn.Module):  # ... inside a pasture Classifier
        def __init__(self):
            super().__init__()
            self.net = Net()

        def normalize(self, images):
            return images

    images = torch.randint(0, 255, (3, 3, 8, 8), dtype=torch.uint8)
    cache = FeatureCache("test-backbone", root=tmp_path)
    features = cache.features(Backbone(), images)
    assert features.shape == (3, 3) and cache.computed == 3
    assert not any(os.scandir(tmp_path)), "nothing written with the cache off"
    again = FeatureCache("test-backbone", root=tmp_path)
    again.features(Backbone(), images)
    assert again.reused == 0 and again.computed == 3
