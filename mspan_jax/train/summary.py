"""TensorBoard event files written with the `tensorboard` package alone (no TensorFlow).

Each value is a tensor summary carrying the plugin name that TensorBoard's scalars / images / text
dashboards read, exactly what `tf.summary.scalar/image/text` write: a float32 scalar, a string
vector `[width, height, png, ...]`, a string. Records are framed by tensorboard's `RecordWriter`
(the TFRecord format with CRCs) into `events.out.tfevents.<time>.<host>.<pid>`, synchronously, so
`flush()` means on disk. A remote log dir (gs://, through etils.epath) gets the whole local file
copied over it at each flush, as TensorFlow's GCS writer re-uploads its file (objects cannot be
appended). Why `tensorboard` and not TensorFlow or tensorboardX: docs/training.md.
"""

from __future__ import annotations

import io
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
from etils import epath
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util

PLUGINS = ("scalars", "images", "text")


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class SummaryWriter:
    """Scalars, images and text for one log directory (created if missing)."""

    def __init__(self, log_dir: str | os.PathLike):
        directory = epath.Path(log_dir)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self.path = directory / name
        self._staging = None if "://" not in os.fspath(directory) else tempfile.TemporaryDirectory()
        local = Path(self._staging.name) / name if self._staging else Path(os.fspath(self.path))
        self._file = open(local, "wb")  # noqa: SIM115 - the writer owns it; closed by close()
        self._records = RecordWriter(self._file)
        self._metadata = {
            plugin: summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin))
            for plugin in PLUGINS}
        self._write_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write_event(self, event: event_pb2.Event) -> None:
        self._records.write(event.SerializeToString())

    def _write(self, tag: str, values: np.ndarray, step: int, plugin: str) -> None:
        value = summary_pb2.Summary.Value(tag=tag, metadata=self._metadata[plugin],
                                          tensor=tensor_util.make_tensor_proto(values))
        self._write_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                          summary=summary_pb2.Summary(value=[value])))

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._write(tag, np.asarray(float(value), np.float32), step, "scalars")

    def image(self, tag: str, images: np.ndarray, step: int) -> None:
        """`images`: uint8 (N, H, W, 3), all written (PNG-encoded, as tf.summary.image does)."""
        images = np.asarray(images, np.uint8)
        h, w = images.shape[1:3]
        strings = [str(w).encode(), str(h).encode(), *(_png(img) for img in images)]
        self._write(tag, np.array(strings, dtype=object), step, "images")

    def text(self, tag: str, text: str, step: int) -> None:
        self._write(tag, np.array(text.encode("utf-8"), dtype=object), step, "text")

    def flush(self) -> None:
        self._records.flush()
        if self._staging is not None:
            self.path.write_bytes(Path(self._file.name).read_bytes())

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._records.close()
        if self._staging is not None:
            self._staging.cleanup()
