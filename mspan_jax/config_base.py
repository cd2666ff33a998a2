"""The one shared base of every config in configs/: paper defaults for each section.

configs/*.py call `sr_config(...)` (super-resolution) or `restoration_config(...)` (MSPAN-IR:
denoising, deraining) and change only what really differs. `config.task` says which ("sr", "denoise",
"derain"); code asks `task_of(config)` / `is_restoration(config)`, never `scale == 1`.

Values derived from the scale (`eval.crop_border`) are ml_collections FieldReferences to
`model.scale`, so `--config.model.scale=2` on configs/x4.py moves them too; setting one explicitly
(`--config.eval.crop_border=0`, or in a config file) cuts the link and keeps that value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from mspan_jax.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The project's read-only shared folder (Set5, Sun & Hays, official weights): $MSPAN_SHARED_DIR,
    else `shared` beside the repository (its ../shared, whatever the working folder). The configs
    that train on it and the tests that need it both find it here."""
    return Path(os.environ.get("MSPAN_SHARED_DIR") or REPO_ROOT.parent / "shared").expanduser()


TASKS = ("sr", "denoise", "derain")
RESTORATION_TASKS = ("denoise", "derain")


def model_task(model_config: Mapping[str, Any]) -> str:
    """The task a `config.model` section alone implies, for what records only the model (a
    checkpoint run without --config, a config file from before `config.task`): "sr" unless the
    scale is 1, else "denoise", the restoration task a model cannot tell from deraining."""
    return "denoise" if model_config.get("scale") == 1 else "sr"


def task_of(config: ml_collections.ConfigDict) -> str:
    """`config.task` ("sr", "denoise", "derain"; `model_task` of `config.model` when unset), checked
    against the model's scale: ConfigError (one line) for an unknown task, "sr" at scale 1 or a
    restoration task at another scale."""
    task = config.get("task") or model_task(config.model)
    if task not in TASKS:
        raise ConfigError(f"config.task={task!r} is not a task; choose one of {list(TASKS)}")
    scale = config.model.get("scale")
    if task == "sr" and not _serves_sr(config.model.get("name")):
        raise ConfigError(f"config.model.name={config.model.name!r} restores images at their size: "
                          f"use config.task {' or '.join(map(repr, RESTORATION_TASKS))} at "
                          "config.model.scale=1 (configs/denoise_*.py, configs/derain.py)")
    if task == "sr" and not (isinstance(scale, int) and scale >= 2):
        raise ConfigError(f"config.task='sr' needs config.model.scale >= 2, got {scale!r}; restoration "
                          f"is config.task {' or '.join(map(repr, RESTORATION_TASKS))} "
                          "(configs/denoise_*.py, configs/derain.py)")
    if task in RESTORATION_TASKS and scale != 1:
        raise ConfigError(f"config.task={task!r} is restoration and needs config.model.scale=1, got "
                          f"{scale!r}; super-resolution is config.task='sr' (configs/x4.py)")
    return task


def _serves_sr(name: Any) -> bool:
    """Whether model `name` does super-resolution (an unknown name: left to the model builder)."""
    from mspan_jax.models.registry import specs

    spec = specs().get(name) if isinstance(name, str) else None
    return spec is None or "sr" in spec.tasks


def is_restoration(config: ml_collections.ConfigDict) -> bool:
    """Whether `config` restores images at their size (denoising, deraining) rather than SR."""
    return task_of(config) in RESTORATION_TASKS


def task_kind(task: str) -> str:
    """"super-resolution" or "restoration": how messages and tables name a task's family."""
    return "restoration" if task in RESTORATION_TASKS else "super-resolution"


def model_config(name: str, scale: int) -> ml_collections.ConfigDict:
    """The `config.model` section of a registered model at a scale: its spec's defaults."""
    from mspan_jax.models.registry import get_spec

    return ml_collections.ConfigDict(
        dict(name=name, scale=scale, dtype="float32", **get_spec(name).defaults)
    )


def sr_config(model: str = "mspan", scale: int = 4) -> ml_collections.ConfigDict:
    """A full config: task, model, data, train and eval sections for SR at `scale` (IMDN's recipe)."""
    config = ml_collections.ConfigDict()
    config.model = model_config(model, scale)
    # "sr" | "denoise" | "derain" (task_of). "sr" here; a bare sr_config("mspan_ir", 1), as tests
    # build one, is a denoising config, as before `task` existed (restoration_config is the full one).
    config.task = model_task(config.model)
    config.seed = 0
    scale_ref = config.model.get_ref("scale")

    config.data = ml_collections.ConfigDict()
    config.data.hr_patch_size = 192  # LR patch = hr_patch_size // scale
    config.data.degradation = "BI"  # how LR is made from HR: "BI" | "BD" | "DN" (data/degradations.py)
    # Training images (docs/data.md): "div2k" (tfds div2k/bicubic_x{s} in data_dir), "div2k_folder"
    # (train_dir holding DIV2K_train_HR [+ DIV2K_train_LR_bicubic/X{s}]), "folder" (any HR images in
    # train_dir, LR made with `degradation`), "skimage" (photos bundled with scikit-image), "paired"
    # (restoration: train_dir/LQ + train_dir/GT).
    config.data.source = "div2k"
    config.data.data_dir = ""  # tfds data_dir ("" = tfds default, ~/tensorflow_datasets)
    config.data.train_dir = ""  # folder for the div2k_folder / folder / paired sources
    config.data.manual_dir = ""  # benchmark HR images for their first tfds preparation ("" = tfds's)
    config.data.image_range = (1, 800)  # div2k_folder: DIV2K images 0001-0800 train (IMDN)
    # DN noise, and MSPAN-IR's synthetic noise (0..255 units): training noise, and always the
    # validation / evaluation noise level (scripts/evaluate.py --noise-sigma overrides it there).
    config.data.noise_sigma = 30.0
    config.data.noise_sigma_range = ()  # (lo, hi): MSPAN-IR trains on a sigma per patch from [lo, hi]
    config.data.noise_gray = False  # one noise field for all channels instead of colour noise
    config.data.augment = True  # random h/v flips + transpose (all 8 rot90 variants), same on LR and HR
    config.data.prefetch = 2  # batches assembled ahead by the input thread
    # Processes decoding the images once at start, then assembling batches (grain; docs/data.md):
    # -1 = one per core (at most 16), 0 = none (one thread of the training process).
    config.data.num_workers = -1
    config.data.cache_dir = ""  # local folder keeping the decoded images for the next run ("" = none)

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 16
    config.train.learning_rate = 2e-4
    config.train.adam_b1 = 0.9
    config.train.adam_b2 = 0.999
    config.train.loss = "l1"
    config.train.adam_eps = 1e-8
    # IMDN's loader: 800 DIV2K images / batch 16 = 50 iterations, repeated 20x -> 1000 steps per epoch.
    config.train.steps_per_epoch = 1000
    config.train.num_epochs = 1000
    config.train.lr_decay_epochs = 200  # the learning rate is multiplied by lr_decay_factor every ...
    config.train.lr_decay_factor = 0.5
    config.train.lr_schedule = "step"  # "step" (the two keys above) | "cosine" (to 0 over the run)
    config.train.num_steps = -1  # > 0: stop after this many steps whatever num_epochs says; -1: none
    config.train.ema_decay = 0.0  # > 0: keep an EMA of the params (e.g. 0.999); eval/best use it
    config.train.grad_clip_norm = 0.0  # > 0: clip gradients to this global norm
    config.train.warm_start = ""  # a converted checkpoint dir (scripts/convert_torch_weights.py)
    # Top-level params that keep their seeded init in a warm start (e.g. ("upsampler",): x2 or x3
    # from a trained x4, whose upsampler has another shape); the warm start's scale may then differ.
    config.train.warm_start_reinit = ()
    # How a re-initialized `upsampler` of another scale starts: "seeded" (the seeded init) or
    # "subpixel" (the warm start's sub-pixel filters, linearly resampled to this scale's phases).
    config.train.warm_start_upsampler = "seeded"
    config.train.log_every_steps = 100  # console progress line and TensorBoard scalars
    config.train.checkpoint_every_steps = 1000  # resumable checkpoint in WORKDIR/checkpoints
    config.train.eval_every_steps = 1000  # validation (IMDN validates once per epoch)
    config.train.keep_checkpoints = 3  # newest resumable checkpoints kept (best one kept apart)
    config.train.async_checkpointing = True  # write checkpoints in the background
    # CPU training (scripts/train.py, one process): 0 = one single-threaded device per core (as many
    # as split batch_size evenly), the batch split over them; 1 = one device whose ops use every core
    # (before issue 32); N = N devices. GPU / TPU runs and XLA_FLAGS naming a device count ignore it.
    config.train.cpu_devices = 0

    config.eval = ml_collections.ConfigDict()
    config.eval.datasets = ("set5",)
    # Shave `scale` pixels, as the papers' MATLAB scripts: follows --config.model.scale (a reference;
    # `* 1` makes it a value of its own, so setting it does not set the scale).
    config.eval.crop_border = scale_ref * 1
    config.eval.y_channel = True
    config.eval.round_y = False
    config.eval.self_ensemble = False  # average the x8 flips/rotations ("+"; 8x the eval time)
    config.eval.num_summary_images = 3  # validation crops (bicubic | SR | HR) written to TensorBoard
    config.eval.summary_crop_size = 128  # HR pixels per side of those crops
    # Restoration: also score scikit-image's non-local means (with its estimated sigma) on the
    # validation sets, once, as a classical baseline beside the LQ input (docs/restoration.md).
    config.eval.classical_baseline = False
    return config


# Gaussian denoising: the noise levels of the DnCNN / FFDNet tables, and the blind range (DnCNN-B).
# 15 / 25 / 50: the DnCNN / FFDNet tables; 30 / 50 / 70: DuRN's, which the MSPAN paper's Gaussian
# denoising table follows (docs/restoration.md).
NOISE_LEVELS = (15, 25, 30, 50, 70)
PAPER_NOISE_LEVELS = (30, 50, 70)
BLIND_SIGMA_RANGE = (0.0, 55.0)


def noise_level(arg: str | None, default: int = 25) -> tuple[float, tuple[float, ...]]:
    """`(noise_sigma, noise_sigma_range)` of a denoising config's argument: the text after ':' in
    `--config configs/denoise_color.py:25` ("15" | "25" | "30" | "50" | "70"), or "blind" (train on
    sigma drawn from BLIND_SIGMA_RANGE per patch, validate at `default`); None (no ':'): `default`."""
    if arg is None or str(arg).strip() == "":
        return float(default), ()
    text = str(arg).strip().lower()
    if text == "blind":
        return float(default), BLIND_SIGMA_RANGE
    if text.isdigit() and int(text) in NOISE_LEVELS:
        return float(text), ()
    raise ConfigError(f"noise level {arg!r}: use one of {list(NOISE_LEVELS)} or 'blind', e.g. "
                     "--config configs/denoise_color.py:25")


def restoration_config(channels: int = 3, task: str = "denoise") -> ml_collections.ConfigDict:
    """A full MSPAN-IR config (scale 1) of `task` ("denoise" or "derain") for `channels` (3: colour,
    1: grayscale) images: the SR recipe's optimizer and schedule on 128x128 patches, scored without a
    border shave.

    The MSPAN paper gives no training recipe for its restoration results: the patch size is the
    SwinIR / DRUNet one, everything else is IMDN's SR recipe (docs/restoration.md)."""
    if task not in RESTORATION_TASKS:
        raise ConfigError(f"restoration task {task!r}: choose one of {list(RESTORATION_TASKS)}")
    config = sr_config(model="mspan_ir", scale=1)
    config.task = task
    config.model.in_channels = config.model.out_channels = channels
    config.data.hr_patch_size = 128  # input = target patch at scale 1
    config.eval.crop_border = 0
    config.eval.y_channel = False  # denoising scores RGB (or the gray plane); deraining sets True
    return config
