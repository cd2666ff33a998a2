"""tfds builders: the SR benchmark sets (`benchmarks`) and paired LQ/GT restoration folders
(`paired_folders`). Importing a module registers its builders with tfds once."""
