"""The precompute job: plan the blocks a store still lacks, run them on Dask, show progress.

1. Validate every video of the dataset (frame counts, sizes, labels) before anything is written.
2. Fit the teachers that model the whole dataset (`Teacher.fit_dataset`, on the training videos) unless
   the store being resumed recorded their fit: the fit becomes the teacher's parameter `fit`, so it is in
   the fingerprint, and the root attribute `dataset_fit` says what it was fitted on.
3. Create or reopen the store (a store built by other teachers or another fit is refused unless
   `overwrite`), record its videos, create every video's arrays up front, write frame labels.
4. List the blocks not yet marked done (`blocks_done`), or marked done but lost a chunk of their data (a deleted
   chunk file or array: the block is unmarked first). Submit one task per run of consecutive such blocks of a
   video (`plan_runs`: up to RUN_FRAMES frames of a video file, RUN_FRAMES_IMAGES of a frame folder, split further
   while there are fewer runs than workers), after
   one task per video that fits per-video teacher state (a background model), if a teacher needs one. A task
   decodes its run once, in order: a video file is opened and seeks once per run, not once per block.
5. A task writes only whole chunks of its own blocks and marks each block done after writing it, so a run
   killed at any moment resumes to the same arrays, and a finished store is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from mtvad import __version__ as pipeline_version
from mtvad.console import console
from mtvad.errors import DatasetError, TeacherError
from mtvad.precompute.blocks import TeacherSpecs, fit_video_states, needs_fit, run_blocks
from mtvad.precompute.datasets.base import Dataset, Video
from mtvad.precompute.teachers import build_teacher
from mtvad.store.access import check_target, create_store
from mtvad.store.schema import DEFAULT_CHUNK_FRAMES, DEFAULT_RESOLUTION, SCHEMA_VERSION
from mtvad.written import remove_zarr_partials

SCHEDULER_LOCAL = "local"  # a Dask LocalCluster of worker processes on this machine
SCHEDULER_INPROCESS = "inprocess"  # no Dask: run the tasks one by one in this process (debugging)
# Frames one task computes at most. In a video file a task's first frame costs a seek, which decodes from the
# keyframe before it (up to 250 frames with x264's defaults): long runs make that small. Any frame of a frame folder
# is cheap to reach: short runs keep every worker busy to the end.
RUN_FRAMES = 1024
RUN_FRAMES_IMAGES = 64


@dataclass
class Plan:
    videos: list[Video]
    tasks: list[tuple[Video, int, int]] = field(default_factory=list)  # (video, block, frames)
    specs: TeacherSpecs = field(default_factory=dict)  # the teachers the tasks run, dataset-level fits filled in
    repaired: int = 0  # blocks marked done whose data had gone missing, computed again

    @property
    def frames(self) -> int:
        return sum(n for _, _, n in self.tasks)

    def runs(self, workers: int, chunk_frames: int) -> list[tuple[Video, list[int]]]:
        def max_blocks(video: Video) -> int:
            return max(1, (RUN_FRAMES if video.decodes_in_order else RUN_FRAMES_IMAGES) // chunk_frames)

        return plan_runs(self.tasks, workers, max_blocks)


def plan_runs(tasks: list[tuple[Video, int, int]], workers: int,
              max_blocks: Callable[[Video], int]) -> list[tuple[Video, list[int]]]:
    """The blocks to compute as (video, consecutive blocks) runs of at most `max_blocks(video)` blocks, even in
    length; while there are fewer runs than workers, the longest is halved. Longest first: the last to finish is
    short."""
    runs: list[tuple[Video, list[int]]] = []
    for video, block, _n in tasks:
        if runs and runs[-1][0] is video and runs[-1][1][-1] == block - 1:
            runs[-1][1].append(block)
        else:
            runs.append((video, [block]))
    even = []
    for video, blocks in runs:
        parts = -(-len(blocks) // max_blocks(video))
        size = -(-len(blocks) // parts)
        even += [(video, blocks[i:i + size]) for i in range(0, len(blocks), size)]
    while len(even) < workers:
        longest = max(range(len(even)), key=lambda i: len(even[i][1]), default=None)
        if longest is None or len(even[longest][1]) < 2:
            break
        video, blocks = even.pop(longest)
        half = -(-len(blocks) // 2)
        even += [(video, blocks[:half]), (video, blocks[half:])]
    return sorted(even, key=lambda run: -len(run[1]))


@dataclass
class Result:
    store: str
    videos: int
    blocks_run: int
    frames_run: int
    seconds: float
    blocks_repaired: int = 0  # of blocks_run: blocks whose data had gone missing from a store marked complete


def build_description(specs: TeacherSpecs, resolution: tuple[int, int], chunk_frames: int) -> tuple[dict, dict]:
    """(build: what the fingerprint covers, classes: the seg teacher's vocabulary)."""
    missing = {"seg", "flow", "depth"} - set(specs)
    if missing:
        raise TeacherError(f"no teacher for role(s) {sorted(missing)}")
    teachers = {role: build_teacher(name, params, role=role) for role, (name, params) in specs.items()}
    build = {
        "schema_version": SCHEMA_VERSION,
        "resolution": list(resolution),
        "chunk_frames": chunk_frames,
        "teachers": {role: t.describe() for role, t in sorted(teachers.items())},
    }
    return build, dict(teachers["seg"].classes)


def plan_store(dataset: Dataset, store_url: str, specs: TeacherSpecs, *, resolution=DEFAULT_RESOLUTION,
               chunk_frames: int = DEFAULT_CHUNK_FRAMES, overwrite: bool = False,
               storage_options: dict | None = None) -> Plan:
    build_description(specs, tuple(resolution), chunk_frames)  # unknown teachers, missing roles: fail first
    videos = list(dataset.videos())
    if not videos:
        raise DatasetError(f"{dataset.root}: no videos found for dataset {dataset.name!r}")
    sizes = {v.split + "/" + v.id: v.validate() for v in videos}  # fails before anything is written
    channels = {v.split + "/" + v.id: v.channels for v in videos}
    check_target(store_url, overwrite=overwrite, storage_options=storage_options)  # before a dataset-level fit
    specs, fits = fit_dataset_teachers(dataset.name, videos, specs, store_url, tuple(resolution),
                                       overwrite=overwrite, storage_options=storage_options)
    build, classes = build_description(specs, tuple(resolution), chunk_frames)
    extra = {"pipeline_version": pipeline_version, "source_root": str(dataset.root), "built_by": _built_by()}
    if fits:
        extra["dataset_fit"] = fits
    recorded: dict[str, dict[str, int]] = {}
    for video in videos:
        recorded.setdefault(video.split, {})[video.id] = video.n_frames
    store = create_store(store_url, dataset=dataset.name, build=build, classes=classes, overwrite=overwrite,
                         storage_options=storage_options, extra=extra, videos=recorded)
    if "://" not in str(store_url):
        remove_zarr_partials(store_url)  # what a killed write left in the store
    plan = Plan(videos, specs=specs)
    for video in videos:
        target = store.create_video(video.split, video.id, n_frames=video.n_frames,
                                    has_labels=video.labels is not None, has_masks=video.masks is not None,
                                    source=str(video.source.path), source_size=sizes[video.split + "/" + video.id],
                                    meta=video.meta, channels=channels[video.split + "/" + video.id])
        target.validate()  # a damaged array's metadata is refused, never taken for complete
        if video.labels is not None and not _labels_stored(target, video.labels):
            target.write_labels(video.labels)  # new video, or ground truth corrected or lost since the build
        # blocks marked done whose data went missing (a deleted chunk or array) are computed again
        lost = sorted({b for blocks in target.absent_chunks().values() for b in blocks})
        if lost:
            target.reset_blocks(lost)
            plan.repaired += len(lost)
        for block in (b for b, done in enumerate(target.blocks_done()) if not done):
            start = block * chunk_frames
            plan.tasks.append((video, block, min(start + chunk_frames, video.n_frames) - start))
    return plan


def _labels_stored(target, labels: np.ndarray) -> bool:
    """The video's labels are in the store, written with their crc32 (not the fill value of a lost chunk)."""
    from mtvad.store.locations import MissingChunkError

    try:
        stored = target.label()
    except MissingChunkError:
        return False
    return "crc32" in target.group["label"].attrs and np.array_equal(stored, labels)


def training_signature(videos: list[Video]) -> list[list]:
    """What a dataset-level fit saw: [id, frames] of every training video."""
    return [[v.id, v.n_frames] for v in videos if v.split == "train"]


def fit_dataset_teachers(dataset: str, videos: list[Video], specs: TeacherSpecs, store_url: str,
                         resolution: tuple[int, int], *, overwrite: bool = False,
                         storage_options: dict | None = None) -> tuple[TeacherSpecs, dict]:
    """(specs with every dataset-level fit filled in, the `dataset_fit` root attribute: per fitted role, the
    teacher, the training videos it saw and the seconds the fit took).

    A teacher given a `fit` keeps it. Otherwise, unless `overwrite`, the fit recorded by the store at
    `store_url` is reused when that store was built from the same dataset and training videos at the same
    resolution with the same teacher (name, version, every other parameter): resuming never refits, and a
    finished store stays a no-op. Else the teacher is fitted on the training videos now."""
    todo = {role: (name, params) for role, (name, params) in specs.items()
            if build_teacher(name, params).needs_dataset_fit}
    if not todo:
        return specs, {}
    from mtvad.store.locations import path_state, storage_options_from_env

    storage_options = storage_options_from_env(store_url, storage_options)
    if path_state(store_url, storage_options) in ("file", "zip", "other"):
        return specs, {}  # not a place to build a store: create_store says why, without a fit first
    train = [v for v in videos if v.split == "train"]
    signature = training_signature(videos)
    recorded = {} if overwrite else _recorded_fits(store_url, storage_options, dataset, resolution, signature)
    fitted, fits = dict(specs), {}
    for role, (name, params) in todo.items():
        old, seconds = recorded.get(role, (None, None))
        unfitted = build_teacher(name, params).describe()  # what the store's teacher must be, but for its fit
        if old is not None and {**old, "params": {**old["params"], "fit": {}}} == unfitted:
            fit = old["params"]["fit"]
        else:
            t0 = time.perf_counter()
            fit = build_teacher(name, params).fit_dataset(train, resolution)
            seconds = round(time.perf_counter() - t0, 1)
        fitted[role] = (name, {**params, "fit": fit})
        fits[role] = {"teacher": name, "train_videos": signature, "seconds": seconds}
    return fitted, fits


def _recorded_fits(store_url: str, storage_options, dataset: str, resolution: tuple[int, int],
                   signature: list[list]) -> dict[str, tuple[dict, Any]]:
    """role -> (recorded description, fit seconds) of each dataset-fitted teacher of an existing store whose
    dataset, resolution and training videos are these ({} when there is no such store)."""
    from mtvad.errors import StoreError
    from mtvad.store.access import open_store
    from mtvad.store.locations import path_state

    if path_state(store_url, storage_options) != "zarr":
        return {}
    try:
        attrs = open_store(store_url, storage_options=storage_options, validate=False).attrs
    except StoreError:
        return {}  # create_store says what is wrong with it
    if attrs.get("dataset") != dataset or list(attrs.get("resolution", [])) != list(resolution):
        return {}
    found = {}
    for role, info in (attrs.get("dataset_fit") or {}).items():
        teacher = (attrs.get("teachers") or {}).get(role)
        if teacher and info.get("train_videos") == signature and (teacher.get("params") or {}).get("fit"):
            found[role] = (teacher, info.get("seconds"))
    return found


def _built_by() -> str:
    """user@host of whoever creates the store (provenance shown by `vad store info`)."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no login name (some containers)
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def precompute(dataset: Dataset, store_url: str, specs: TeacherSpecs, *, resolution=DEFAULT_RESOLUTION,
               chunk_frames: int = DEFAULT_CHUNK_FRAMES, scheduler: str = SCHEDULER_LOCAL,
               workers: int | None = None, overwrite: bool = False, storage_options: dict | None = None,
               progress: bool = True) -> Result:
    t0 = time.perf_counter()
    plan = plan_store(dataset, store_url, specs, resolution=resolution, chunk_frames=chunk_frames,
                      overwrite=overwrite, storage_options=storage_options)
    if plan.tasks:
        with _progress(plan, enabled=progress) as advance:
            runner = _run_inprocess if scheduler == SCHEDULER_INPROCESS else _run_dask
            runner(plan, store_url, plan.specs, storage_options, advance, scheduler=scheduler, workers=workers)
    return Result(store_url, len(plan.videos), len(plan.tasks), plan.frames, time.perf_counter() - t0,
                  plan.repaired)


def _run_inprocess(plan: Plan, store_url: str, specs: TeacherSpecs, storage_options, advance, **_) -> None:
    states: dict[str, Any] = {}
    resolution, chunk_frames = _layout_of(store_url, storage_options)
    for video, blocks in plan.runs(1, chunk_frames):
        key = f"{video.split}/{video.id}"
        if key not in states:
            states[key] = fit_video_states(video, specs, resolution)
        for done in run_blocks(store_url, video, blocks, specs, states[key], storage_options):
            advance(*done)


def _layout_of(store_url: str, storage_options) -> tuple[tuple[int, int], int]:
    """(resolution, frames per chunk) of a store."""
    from mtvad.store.access import open_store

    store = open_store(store_url, storage_options=storage_options, validate=False)
    return store.resolution, store.chunk_frames


def _run_dask(plan: Plan, store_url: str, specs: TeacherSpecs, storage_options, advance, *, scheduler: str,
              workers: int | None) -> None:
    from distributed import as_completed

    resolution, chunk_frames = _layout_of(store_url, storage_options)
    gpu = any(build_teacher(name, params).needs_gpu for name, params in specs.values())
    with _client(scheduler, workers, gpu) as client:
        resources = {"GPU": 1} if gpu and _cluster_has_gpu(client) else None
        fit = needs_fit(specs)
        states: dict[str, Any] = {}
        futures = []
        for video, blocks in plan.runs(max(1, sum(client.nthreads().values())), chunk_frames):
            key = f"{video.split}/{video.id}"
            if fit and key not in states:
                states[key] = client.submit(fit_video_states, video, specs, resolution, pure=False,
                                            key=f"fit-{key}-{time.time_ns()}", resources=resources)
            futures.append(client.submit(run_blocks, store_url, video, blocks, specs, states.get(key, {}),
                                         storage_options, pure=False,
                                         key=f"blocks-{key}-{blocks[0]}-{time.time_ns()}", resources=resources))
        try:
            for future in as_completed(futures):
                for done in future.result():  # re-raises a task's error (e.g. a truncated frame) here
                    advance(*done)
        except BaseException:
            client.cancel(futures + [s for s in states.values() if hasattr(s, "cancel")])
            raise


def _cluster_has_gpu(client) -> bool:
    info = client.scheduler_info()
    return any(w.get("resources", {}).get("GPU") for w in info.get("workers", {}).values())


@contextlib.contextmanager
def _client(scheduler: str, workers: int | None, gpu: bool) -> Iterator[Any]:
    import dask
    from distributed import Client, LocalCluster

    if scheduler != SCHEDULER_LOCAL:
        with Client(scheduler) as client:  # an existing cluster: its workers must see the data and the store
            yield client
        return
    n = workers or max(1, min(os.cpu_count() or 1, 8))
    kwargs: dict[str, Any] = {}
    if gpu:
        import torch

        if torch.cuda.is_available():
            n = workers or torch.cuda.device_count()
            kwargs["resources"] = {"GPU": 1}
    # Dask sets MALLOC_TRIM_THRESHOLD_=65536 in its workers to hand memory back to the OS; that turns off glibc's
    # adaptive thresholds, and every frame-sized array is then mmap'ed and page-faulted anew: blocks ran 35%
    # slower. Our tasks hold a block at a time, so glibc's defaults are right here (a value in the environment
    # of this process still wins).
    no_trim = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    with _environment_kept(), dask.config.set(no_trim), \
            LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50,
                         **kwargs) as cluster, Client(cluster) as client:
        client.run(_one_thread_per_worker)  # n workers x 1 thread: no oversubscribed cores
        yield client


@contextlib.contextmanager
def _environment_kept() -> Iterator[None]:
    """This process's environment as it was before: the local cluster's nannies set OMP_NUM_THREADS=1 (and the
    like) in it for their workers, and torch, imported after a precompute in the same process (`vad detect`),
    then trained on one thread."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update({k: v for k, v in saved.items() if os.environ.get(k) != v})


def _one_thread_per_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # torch reads OMP_NUM_THREADS=1, which Dask sets in its workers
    from numcodecs import blosc

    blosc.set_nthreads(1)  # blosc (the store's bit-shuffled arrays) starts a thread per core otherwise


@contextlib.contextmanager
def _progress(plan: Plan, enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """Two rich bars: videos completed, frames computed (with frames/s and ETA)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    blocks_left: dict[str, int] = {}
    for video, _b, _n in plan.tasks:
        key = f"{video.split}/{video.id}"
        blocks_left[key] = blocks_left.get(key, 0) + 1
    columns = (TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not enabled, transient=False) as bar:
        videos = bar.add_task("videos", total=len(blocks_left), rate="")
        frames = bar.add_task("frames", total=plan.frames, rate="")
        t0 = time.perf_counter()
        done = 0

        def advance(key: str, block: int, n: int) -> None:
            nonlocal done
            done += n
            blocks_left[key] -= 1
            bar.update(frames, advance=n, rate=f"{done / max(time.perf_counter() - t0, 1e-9):.1f} frames/s")
            if blocks_left[key] == 0:
                bar.update(videos, advance=1)

        yield advance
