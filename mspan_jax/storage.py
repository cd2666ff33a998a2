"""Bucket storage (gs://): the environment every file layer needs, and one-line checks at start.

Three layers talk to Google Cloud Storage: etils.epath (orbax's directories and metadata, the
TensorBoard events, eval_results.json, the lock), which goes through fsspec and gcsfs; tensorstore
(orbax's array data); and TensorFlow's own GCS file system (tfds reading records). `configure()`
runs when the package is imported, before any of them is, and sets only what the user left unset:

* `EPATH_USE_TF=false`: epath would otherwise pick tf.io.gfile for gs:// whenever TensorFlow is
  installed, and TensorFlow's GCS client has no endpoint setting (so no emulator) and a second
  set of credentials; fsspec/gcsfs is the one client.
* `GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`: gcsfs would first ask each bucket for its storage
  layout over gRPC, which an emulator cannot answer (a 60 s wait per bucket).
* With `STORAGE_EMULATOR_HOST` (the convention of Google's clients, honoured by gcsfs):
  `TENSORSTORE_GCS_HTTP_URL` (tensorstore's documented endpoint setting) points tensorstore at the
  same server, `GOOGLE_AUTH_TOKEN_FOR_TESTING` gives it a fixed token instead of a credential
  lookup, and gcsfs is made anonymous (no metadata-server lookup).
* gcsfs caches no folder listings (every host writes into the run's folders).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mspan_jax.errors import UserError, first_line

if TYPE_CHECKING:
    from etils import epath

GCS_EXTRA = "gcs"


class StorageError(UserError, OSError):
    """A bucket that cannot be used as asked (missing, misnamed, unreachable); one line."""


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URL (gs://...) rather than a local path."""
    return "://" in os.fspath(path)


def as_path(path: str | os.PathLike) -> Path | epath.Path:
    """`path` as a pathlib.Path, or as an etils.epath.Path when it is a URL (pathlib would fold
    gs://bucket into gs:/bucket)."""
    if is_remote(path):
        from etils import epath

        return epath.Path(os.fspath(path))
    return Path(path)


def absolute(path: str | os.PathLike) -> Path | epath.Path:
    """`as_path(path)`, made absolute when it is local."""
    return as_path(path) if is_remote(path) else Path(path).absolute()


def remove_tree(path: Path | epath.Path) -> None:
    """Removes a folder, local or remote, if it is there (errors ignored: a best-effort clean-up)."""
    import contextlib
    import shutil

    if isinstance(path, Path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(Exception):
            path.rmtree(missing_ok=True)


def emulator_url() -> str | None:
    """The GCS emulator's base URL from STORAGE_EMULATOR_HOST (host:port or a URL), or None."""
    host = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
    if not host:
        return None
    return host.rstrip("/") if "://" in host else f"http://{host.rstrip('/')}"


def configure() -> None:
    """Sets, unless already set, the environment the GCS layers read (module docstring)."""
    os.environ.setdefault("EPATH_USE_TF", "false")
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    # No cached folder listings in gcsfs: the other hosts of a run write into the same folders (a
    # stale listing hid their newest checkpoint).
    options: dict[str, object] = {"use_listings_cache": False}
    url = emulator_url()
    if url is not None:
        os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", url)
        os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
        options["token"] = "anon"
    _set_gcsfs_defaults(options)


def _set_gcsfs_defaults(options: dict[str, object]) -> None:
    """gcsfs keyword defaults through fsspec's config: the FSSPEC_GCS variable (JSON) that fsspec
    reads when first imported, and its config dict when it already is (importing it costs time)."""
    if "fsspec" in sys.modules:
        conf = sys.modules["fsspec"].config.conf.setdefault("gcs", {})
    else:
        try:
            conf = json.loads(os.environ.get("FSSPEC_GCS") or "{}")
        except ValueError:
            conf = {}
    for key, value in options.items():
        conf.setdefault(key, value)
    if "fsspec" not in sys.modules:
        os.environ["FSSPEC_GCS"] = json.dumps(conf)


def _bucket(path: str) -> str:
    return path.split("://", 1)[1].split("/", 1)[0]


def check_bucket(path: str | os.PathLike, flag: str) -> None:
    """For a gs:// `path`: raises MissingExtraError (one line naming the [gcs] extra) when the GCS
    client is not installed, and StorageError (one line naming `flag`) when its bucket does not
    exist or cannot be reached. Local paths pass unchecked."""
    text = os.fspath(path)
    if not is_remote(text):
        return
    if not text.startswith("gs://"):
        raise StorageError(f"{flag} {text}: only local paths and gs:// URLs are supported")
    from mspan_jax.extras import require

    require(GCS_EXTRA, f"{flag} {text}")
    import gcsfs
    from fsspec.asyn import sync

    bucket = _bucket(text)
    fs = gcsfs.GCSFileSystem()
    once = gcsfs.GCSFileSystem._request.__wrapped__  # one try: gcsfs retries for ~30 s per request
    try:
        sync(fs.loop, once, fs, "GET", "b/{}", bucket)
        found = True
    except FileNotFoundError:
        found = False
    except Exception as e:  # noqa: BLE001 - any failure to reach the bucket is the user's to fix
        if getattr(e, "code", None) == 403:  # may not read the bucket's metadata, only its objects
            return
        raise StorageError(f"{flag} {text}: cannot reach bucket gs://{bucket} "
                           f"({first_line(e, typed=True, limit=200)}); check the name, your "
                           "network and credentials (gcloud auth application-default login)") from None
    if not found:
        raise StorageError(f"{flag} {text}: bucket gs://{bucket} does not exist or is not visible to "
                           f"these credentials; create it (gcloud storage buckets create gs://{bucket}) "
                           "or fix the name")


def cache_root() -> Path:
    """This machine's folder for local copies of bucket data: `$XDG_CACHE_HOME/mspan_jax`
    (default `~/.cache/mspan_jax`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mspan_jax"


def _gcs():
    """The fsspec gs:// file system (gcsfs), configured by `configure()`."""
    import fsspec

    return fsspec.filesystem("gs")


def local_tfds_dir(data_dir: str | os.PathLike | None, builder_dir: str,
                   flag: str = "data_dir") -> str | None:
    """A tfds data_dir that tfds can read for builder `builder_dir` ("div2k/bicubic_x4", "set5").

    Local or unset: `data_dir` itself. gs://: a local folder (`cache_root()/tfds/<bucket>/<path>`)
    into which `<data_dir>/<builder_dir>` is copied through gcsfs (files missing or of another size
    only), because tfds reads and writes its record files through TensorFlow's own GCS client (a
    second client and credentials, no emulator endpoint), which this package keeps out. A builder
    the bucket lacks leaves the folder empty: tfds then prepares it there, on this machine only."""
    if not data_dir or not is_remote(data_dir):
        return None if not data_dir else os.fspath(data_dir)
    text = os.fspath(data_dir).rstrip("/")
    check_bucket(text, flag)
    local = cache_root() / "tfds" / text.split("://", 1)[1]
    remote = f"{text}/{builder_dir}".split("://", 1)[1]
    fs = _gcs()
    try:
        found = fs.find(remote, detail=True)
    except Exception as e:  # noqa: BLE001 - a bucket that fails mid-listing: one line
        raise StorageError(f"{flag} {text}: cannot list {builder_dir} "
                           f"({first_line(e, typed=True, limit=200)})") from None
    for path, info in found.items():
        target = local / builder_dir / path[len(remote) + 1:]
        if target.is_file() and target.stat().st_size == int(info.get("size") or 0):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        fs.get_file(path, str(partial))
        os.replace(partial, target)
    local.mkdir(parents=True, exist_ok=True)
    return str(local)


def upload_tree(local: Path, remote: str) -> int:
    """Copies every file under the local folder `local` to the same place under the gs:// URL
    `remote`; returns the number of files. tfds' `dataset_info.json` goes last: until it is there,
    tfds takes the folder for unprepared, so an interrupted upload is never read as a whole set."""
    fs = _gcs()
    files = sorted((p for p in local.rglob("*") if p.is_file()),
                   key=lambda p: (p.name == "dataset_info.json", p.as_posix()))
    for path in files:
        fs.put_file(str(path), f"{remote.rstrip('/')}/{path.relative_to(local).as_posix()}")
    return len(files)
