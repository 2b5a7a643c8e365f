"""Where a store lives: a local folder, a packed `.zip` (read-only, in place) or an fsspec URL (s3://...,
storage options from $VAD_STORAGE_OPTIONS), and what a path holds before anything is opened."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import zarr

from mtvad.errors import StoreError

STORAGE_OPTIONS_ENV = "VAD_STORAGE_OPTIONS"  # JSON dict of fsspec storage options for remote URLs


def is_zip(url: str | Path) -> bool:
    """A packed store (`vad store pack`): a local file whose name ends in .zip."""
    return is_local(url) and str(url).lower().endswith(".zip")


def storage_options_from_env(url: str | Path, storage_options: dict | None = None) -> dict | None:
    """Explicit options win; for a remote URL without them, the JSON dict in $VAD_STORAGE_OPTIONS (if set).

    Credentials and endpoints usually need no options at all: s3fs (through botocore) reads AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL and
    AWS_ENDPOINT_URL_S3 itself; fsspec applies FSSPEC_<PROTOCOL>_<OPTION> variables to every filesystem."""
    if storage_options is not None or is_local(url):
        return storage_options
    raw = os.environ.get(STORAGE_OPTIONS_ENV, "").strip()
    if not raw:
        return None
    try:
        options = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StoreError(f"${STORAGE_OPTIONS_ENV} is not valid JSON ({exc}); give a JSON object, e.g. "
                         '\'{"anon": true}\'') from None
    if not isinstance(options, dict):
        raise StoreError(f"${STORAGE_OPTIONS_ENV} must be a JSON object, got {type(options).__name__}")
    return options


def zarr_store(url: str | Path, read_only: bool, storage_options: dict | None = None):
    url = str(url)
    if is_zip(url):
        if not read_only:
            raise StoreError(f"{url}: a packed store (.zip) is read-only: `vad store unpack` it to a folder to "
                             "resume or change it")
        return zarr.storage.ZipStore(local_path(url), mode="r")
    if "://" in url and not url.startswith("file://"):
        return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options, read_only=read_only)
    return zarr.storage.LocalStore(url.removeprefix("file://"), read_only=read_only)


def is_local(url: str | Path) -> bool:
    return "://" not in str(url) or str(url).startswith("file://")


def local_path(url: str | Path) -> Path:
    return Path(str(url).removeprefix("file://"))


def path_state(url: str | Path, storage_options: dict | None = None) -> str:
    """'missing', 'empty' (an empty folder), 'file', 'zip' (a .zip file), 'zarr' (has zarr.json) or 'other'
    (non-empty folder)."""
    import fsspec

    if is_zip(url):
        path = local_path(url)
        if path.is_file():
            return "zip"
        return "other" if path.exists() else "missing"
    try:
        fs, path = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
        if fs.exists(path.rstrip("/") + "/zarr.json"):
            return "zarr"
        if not fs.exists(path):
            return "missing"
        if fs.isfile(path):
            return "file"
        return "other" if fs.ls(path) else "empty"
    except (ImportError, ValueError) as exc:  # no filesystem for this protocol (s3fs not installed, ...)
        raise StoreError(f"{url}: cannot open this URL ({exc})") from None
    except Exception as exc:  # unreachable endpoint, refused credentials, ...
        if is_local(url):
            raise
        raise StoreError(
            f"{url}: cannot reach the store ({type(exc).__name__}: {exc}). For S3 check AWS_ACCESS_KEY_ID, "
            f"AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) and AWS_DEFAULT_REGION; other "
            f"fsspec options go in ${STORAGE_OPTIONS_ENV} as JSON") from None


def run_sync(coro):
    """Run a coroutine of a zarr store on zarr's own IO loop, where an fsspec store's async filesystem lives
    (a private zarr API: there is no public one; pyproject pins zarr<4 for it, and the store tests use it)."""
    from zarr.core.sync import sync

    return sync(coro)


def get_many(zstore, keys: list[str]) -> list[bytes | None]:
    """The raw bytes of several keys of a zarr store, fetched concurrently (None where absent)."""
    from zarr.buffer import default_buffer_prototype

    async def fetch() -> list:
        proto = default_buffer_prototype()
        return await asyncio.gather(*(zstore.get(key, proto) for key in keys))

    return [None if buf is None else buf.to_bytes() for buf in run_sync(fetch())]


def list_keys(zstore) -> list[str]:
    """Every key of a zarr store (chunk files and metadata), relative to its root."""

    async def collect() -> list[str]:
        return [key async for key in zstore.list()]

    return run_sync(collect())
