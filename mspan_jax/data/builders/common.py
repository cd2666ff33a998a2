"""What the package's tfds builders share: one-time registration and a code path tfds can find."""

from __future__ import annotations

import inspect

import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils


def is_registered(name: str) -> bool:
    """Whether tfds already knows a builder `name` (a module imported twice must not register twice)."""
    try:
        tfds.builder_cls(name)
    except tfds.core.registered.DatasetNotFoundError:
        return False
    return True


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A GeneratorBasedBuilder defined in this package.

    tfds' default `code_path` probes `importlib_resources` (not a dependency of tfds 4.9, so missing in
    a plain install) for any builder outside tfds; the file of the class is all it needs."""

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path | None:
        return epath.Path(inspect.getfile(cls))
