"""`pasture predict RUN FOLDER --csv OUT --engine ray` on a local Ray instance with two worker processes
(issue 42): the same rows as a local predict, several shards streamed into one CSV, and a killed predict
continued by the same command without scoring again the shards it finished."""

import pytest
from conftest import local_ray_instance, make_image, write_split_data

from pasture import api
from pasture.cli import main

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
from pasture.study import ray_predict  # noqa: E402  (needs ray)

pytestmark = pytest.mark.slow  # a Ray instance and a probe run: about half a minute


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs (two worker processes), its workers' cache in its own folder."""
    with local_ray_instance(ray, "prp", 2, private_cache=True) as instance:
        yield instance


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("raypredict")
    data = write_split_data(root / "data")
    run = root / "run"
    api.train(data, run, recipe="probe", image_size=48, quiet=True)
    photos = root / "photos"
    photos.mkdir()
    for index in range(11):
        make_image("cow" if index % 2 else "horse", 700 + index).save(photos / f"p{index:02d}.png")
    (photos / "broken.png").write_bytes(b"not a png")  # a skipped row, with its reason
    local = root / "local.csv"
    api.predict(run, [photos], csv=local)
    return run, photos, local


def test_ray_gives_the_local_rows_from_several_shards(local_ray, scored, tmp_path, monkeypatch, capsys):
    run, photos, local = scored
    monkeypatch.setattr(ray_predict, "SHARD", 4)  # 12 photos: 3 shards over the 2 workers
    out = tmp_path / "ray.csv"
    assert main(["predict", str(run), str(photos), "--csv", str(out), "--engine", "ray", "--quiet"]) == 0
    assert "12 images: 11 predicted, 1 skipped" in capsys.readouterr().out
    assert out.read_text() == local.read_text()
    assert not (tmp_path / ".ray.csv.parts").exists()


def test_a_killed_ray_predict_continues_where_it_stopped(local_ray, scored, tmp_path, monkeypatch):
    run, photos, local = scored
    monkeypatch.setattr(ray_predict, "SHARD", 4)
    out = tmp_path / "ray.csv"

    def killed(*args):
        raise KeyboardInterrupt  # after every shard was written, before the CSV was assembled

    with monkeypatch.context() as patch:
        patch.setattr(ray_predict, "_assemble", killed)
        with pytest.raises(KeyboardInterrupt):
            api.predict(run, [photos], csv=out, engine="ray")
    parts = tmp_path / ".ray.csv.parts"
    assert not out.exists() and sorted(path.name for path in parts.glob("*.csv")) == [
        "000000.csv",
        "000001.csv",
        "000002.csv",
    ]
    (parts / "000001.csv").unlink()  # as if the kill came before that shard finished
    written = []
    original = ray_predict._write_part
    monkeypatch.setattr(
        ray_predict, "_write_part", lambda path, cells: (written.append(path.name), original(path, cells))
    )
    assert api.predict(run, [photos], csv=out, engine="ray")["shards"] == 3
    # only the missing shard was scored again, and the CSV is the local one
    assert written == ["000001.csv"] and out.read_text() == local.read_text()


def test_ray_needs_a_run_folder_and_a_csv(scored, capsys):
    run, photos, _ = scored
    assert main(["predict", str(run), str(photos), "--engine", "ray"]) == 2
    assert "--engine ray: give a run folder and --csv OUT" in capsys.readouterr().err
