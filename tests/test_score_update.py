"""`score(update=True)`: only the videos a store gained since its scores file was written are scored."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mtvad.scoring.score import score
from mtvad.scoring.scores_file import ScoresError, open_scores
from mtvad.store.access import open_store
from tests.stores import make_store, random_video_values, train_one_step

pytestmark = pytest.mark.usefixtures("one_thread")


def file_times(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def add_test_video(url: Path, vid: str, n: int = 10, seed: int = 7) -> None:
    store = open_store(url, mode="r+")
    video = store.create_video("test", vid, n_frames=n, has_labels=False, has_masks=False)
    values = random_video_values(np.random.default_rng(seed), n, store.resolution, 3, first_frame=True)
    for block in range(-(-n // store.chunk_frames)):
        lo, hi = block * store.chunk_frames, min((block + 1) * store.chunk_frames, n)
        video.write_block(block, {k: v[lo:hi] for k, v in values.items()})


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("update")
    make_store(root / "s.zarr", n_test=1, n_classes=3)
    from tests.stores import one_torch_thread

    with one_torch_thread():
        train_one_step(root / "s.zarr", root / "run")
    return root


def checkpoints(root: Path) -> list[Path]:
    return [root / "run" / "appearance" / "last.pt", root / "run" / "motion" / "last.pt"]


def test_an_update_scores_only_the_new_video_and_leaves_the_others_files_alone(scored, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(scored / "s.zarr", store)
    out = tmp_path / "scores.zarr"
    first = score(str(store), checkpoints(scored), out, maps=True, update=True, progress=False)
    assert first.videos == {"train": 2, "test": 1}
    before = file_times(out)
    old = open_scores(out).row("test", "01", "motion", "sum")[0]

    again = score(str(store), checkpoints(scored), out, maps=True, update=True, progress=False)
    assert again.videos == {"train": 0, "test": 0}
    assert file_times(out) == before  # nothing new: not a byte written

    add_test_video(store, "02")
    added = score(str(store), checkpoints(scored), out, maps=True, update=True, progress=False)
    assert added.videos == {"train": 0, "test": 1} and added.frames["test"] == 10
    after = file_times(out)
    kept = {k: v for k, v in before.items() if k != "zarr.json"}  # the root's record of the store changes
    assert {k: after[k] for k in kept} == kept
    assert any(k.startswith("test/02/") for k in after)
    sf = open_scores(out)
    sf.check_store(open_store(store))  # the file's record of the store's videos is up to date
    assert sf.video_ids("test") == ["01", "02"]
    assert sf.attrs["store"]["videos"]["test"] == {"01": 10, "02": 10}
    np.testing.assert_array_equal(sf.row("test", "01", "motion", "sum")[0], old)
    assert sf.map("test", "02", "motion") is not None


def test_an_update_with_other_checkpoints_scores_everything_again(scored, tmp_path):
    out = tmp_path / "scores.zarr"
    score(str(scored / "s.zarr"), checkpoints(scored)[1:], out, update=True, progress=False)
    with pytest.raises(ScoresError, match="--overwrite"):  # a file of other checkpoints is not replaced silently
        score(str(scored / "s.zarr"), checkpoints(scored), out, update=True, progress=False)
    r = score(str(scored / "s.zarr"), checkpoints(scored), out, update=True, overwrite=True, progress=False)
    assert r.videos == {"train": 2, "test": 1}
    assert open_scores(out).branches == ["appearance", "motion"]
