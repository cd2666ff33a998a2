"""tfds builders: the SR benchmark sets (`benchmarks`) and paired LQ/GT restoration folders
(`paired_folders`). Importing a module registers its builders with tfds once.

They need the `[tfds]` extra (tensorflow-datasets, and TensorFlow, through which tfds encodes and
reads the examples); without it, importing this package raises one MissingExtraError naming it."""

from mspan_jax.extras import require

require("tfds", "mspan_jax.data.builders (tfds benchmark sets and paired folders)")
