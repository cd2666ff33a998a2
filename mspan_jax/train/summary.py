"""TensorBoard event files written with TensorFlow's core `tf.summary.write` (tensorflow-cpu is a
dependency; the `tensorboard` package, which `tf.summary.scalar/image` need, is only needed to view
them). Each value carries the plugin name TensorBoard's scalars / images / text dashboards read."""

from __future__ import annotations

import numpy as np


class SummaryWriter:
    """Scalars, images and text for one log directory; TensorFlow is imported on first use."""

    def __init__(self, log_dir: str):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        tf.config.set_visible_devices([], "GPU")  # TF must not take accelerator memory from JAX
        self._tf = tf
        self._metadata = {
            plugin: summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin))
            for plugin in ("scalars", "images", "text")
        }
        self._writer = tf.summary.create_file_writer(log_dir)

    def _write(self, tag: str, tensor, step: int, plugin: str) -> None:
        with self._writer.as_default():
            self._tf.summary.write(tag, tensor, step=step, metadata=self._metadata[plugin])

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._write(tag, self._tf.constant(float(value), self._tf.float32), step, "scalars")

    def image(self, tag: str, images: np.ndarray, step: int) -> None:
        """`images`: uint8 (N, H, W, 3), all written (PNG-encoded, as tf.summary.image does)."""
        images = np.asarray(images, np.uint8)
        h, w = images.shape[1:3]
        pngs = [self._tf.io.encode_png(img) for img in images]
        self._write(tag, self._tf.stack([self._tf.constant(str(w)), self._tf.constant(str(h)), *pngs]),
                    step, "images")

    def text(self, tag: str, text: str, step: int) -> None:
        self._write(tag, self._tf.constant(text), step, "text")

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
