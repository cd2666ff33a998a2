"""The evaluation suite that validation during training and scripts/evaluate.py share: which sets
(`load_sets` by name, `load_folder_set` for a folder), which baselines (bicubic for SR, the LQ input
itself for restoration, and non-local means with `config.eval.classical_baseline`) and how everything
is scored (`Scoring`, from `config.eval`), so a validation number and an evaluate.py number of the
same params are the same number.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from mspan_jax.config_base import RESTORATION_TASKS, is_restoration, task_of
from mspan_jax.data.datasets import load_benchmark, load_restoration_set
from mspan_jax.data.images import list_images
from mspan_jax.data.pairs import (
    PAIRED_CONFIGS,
    EvalPair,
    is_folder_set,
    load_folder_pairs,
    load_folder_restoration_pairs,
    load_set_folder,
)
from mspan_jax.evaluation import (
    EvalResult,
    bicubic_scores,
    evaluate_pairs,
    input_scores,
    nl_means_scores,
)
from mspan_jax.inference import ApplyFn


def baseline_key(task: str) -> str:
    """The key of the baseline every model of `task` is compared with: "bicubic" for SR, "input"
    (the noisy / rainy LQ itself) for restoration. eval_results.json and --json keep these keys."""
    return "input" if task in RESTORATION_TASKS else "bicubic"


@dataclasses.dataclass(frozen=True)
class Scoring:
    """How models and baselines are scored: `crop_border` pixels shaved, Y (optionally rounded, as
    the official IMDN script) or RGB, x8 `self_ensemble`, LR padded to multiples of `bucket` where
    exact; `classical_baseline` adds non-local means for restoration; `gray` for 1-channel models."""

    scale: int
    crop_border: int
    y_channel: bool
    task: str  # config.task: "sr" | "denoise" | "derain"
    round_y: bool = False
    self_ensemble: bool = False
    classical_baseline: bool = False
    gray: bool = False
    bucket: int = 64

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, *, round_y: bool | None = None,
                    self_ensemble: bool | None = None, bucket: int = 64) -> Scoring:
        """`config.eval`'s scoring for `config.model` and `config.task`; `round_y` /
        `self_ensemble` (command-line flags) replace the config's value when not None, so they can
        turn it off as well as on."""
        task = task_of(config)
        ev = config.eval
        return cls(scale=int(config.model.scale), crop_border=int(ev.crop_border),
                   y_channel=bool(ev.y_channel), task=task,
                   round_y=bool(ev.round_y) if round_y is None else round_y,
                   self_ensemble=(bool(ev.get("self_ensemble", False)) if self_ensemble is None
                                  else self_ensemble),
                   classical_baseline=(task in RESTORATION_TASKS
                                       and bool(ev.get("classical_baseline", False))),
                   gray=int(config.model.get("in_channels", 3)) == 1, bucket=bucket)

    @property
    def baselines(self) -> tuple[str, ...]:
        """The baselines scored, main one first: `baseline_key`, then "nl_means" when asked for."""
        return (baseline_key(self.task),) + (("nl_means",) if self.classical_baseline else ())

    @property
    def channel(self) -> str:
        """What the metrics see: "gray", "Y", "Y, rounded" or "RGB"."""
        if self.gray:
            return "gray"
        return ("Y, rounded" if self.round_y else "Y") if self.y_channel else "RGB"


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """A named set of pairs. `noise_sigma`: restoration sets made of clean images with seeded
    Gaussian noise of that std (None for real LQ images and SR); `skipped`: files of a folder that
    could not be used."""

    name: str
    pairs: list[EvalPair]
    noise_sigma: float | None = None
    skipped: tuple[str, ...] = ()


def load_sets(config: ml_collections.ConfigDict, names: Sequence[str] | None = None, *,
              noise_sigma: float | None = None, data_dir: str | None = None,
              manual_dir: str | None = None, download: bool = False) -> list[EvalSet]:
    """The sets `names` (default `config.eval.datasets`), each whole or failing: SR benchmarks
    (tfds) or image folders (a path), LR by `config.data.degradation` (DN at the noise sigma);
    restoration denoising sets with seeded noise of `noise_sigma` (default
    `config.data.noise_sigma`) or paired sets. `download` fetches a missing SR benchmark."""
    names = list(config.eval.datasets if names is None else names)
    scale = int(config.model.scale)
    dirs = dict(data_dir=data_dir, manual_dir=manual_dir)
    if is_restoration(config):
        sigma = float(config.data.noise_sigma if noise_sigma is None else noise_sigma)
        channels = int(config.model.get("in_channels", 3))
        return [EvalSet(name, load_restoration_set(name, sigma, gray_noise=bool(config.data.noise_gray),
                                                   channels=channels, **dirs),
                        noise_sigma=None if name in PAIRED_CONFIGS else sigma)
                for name in names]
    degradation = config.data.get("degradation", "BI")
    sigma = float(config.data.noise_sigma if noise_sigma is None else noise_sigma)  # DN: as trained
    return [EvalSet(name, load_set_folder(name, scale, degradation, noise_sigma=sigma)
                    if is_folder_set(name)
                    else load_benchmark(name, scale, degradation, download=download,
                                        noise_sigma=sigma, **dirs))
            for name in names]


def folder_set_name(hr_dir: Path) -> str:
    """The set's name: the folder's, or its parent's for a folder called HR or GT (Set5/HR -> Set5)."""
    hr_dir = hr_dir.resolve()
    generic = hr_dir.name.lower() in ("hr", "gt")
    return hr_dir.parent.name if generic and hr_dir.parent.name else hr_dir.name


def load_folder_set(config: ml_collections.ConfigDict, hr_dir: str | Path, lr_dir: str | None = None,
                    *, noise_sigma: float | None = None) -> EvalSet:
    """A folder of HR (restoration: clean GT) images as one set, unreadable or too small files
    skipped with a warning naming each. LR from `lr_dir` or MATLAB bicubic of the HR; restoration
    LQ from `lr_dir` paired by name, or the GT with seeded noise of `noise_sigma` (default
    `config.data.noise_sigma`)."""
    hr_dir = Path(hr_dir)
    scale = int(config.model.scale)
    if is_restoration(config):
        sigma = float(config.data.noise_sigma if noise_sigma is None else noise_sigma)
        pairs, skipped = load_folder_restoration_pairs(
            hr_dir, lr_dir, noise_sigma=sigma, channels=int(config.model.get("in_channels", 3)),
            gray_noise=bool(config.data.noise_gray))
        return EvalSet(folder_set_name(hr_dir), pairs, sigma if lr_dir is None else None,
                       tuple(skipped))
    pairs = load_folder_pairs(hr_dir, scale, lr_dir, skip_unusable=True,
                              degradation=config.data.get("degradation", "BI"),
                              noise_sigma=float(config.data.noise_sigma if noise_sigma is None
                                                else noise_sigma))
    scored = {p.name for p in pairs}
    skipped = tuple(path.name for path in list_images(hr_dir) if path.stem not in scored)
    return EvalSet(folder_set_name(hr_dir), pairs, skipped=skipped)


def score_baseline(key: str, pairs: Sequence[EvalPair], scoring: Scoring, *,
                   keep_outputs: bool = False) -> EvalResult:
    """Baseline `key` ("bicubic", "input" or "nl_means") on `pairs`, scored as `scoring` says
    (non-local means on unrounded values: its output is uint8 already)."""
    opts = dict(crop_border=scoring.crop_border, y_channel=scoring.y_channel)
    if key == "nl_means":
        return nl_means_scores(pairs, keep_outputs=keep_outputs, **opts)
    if key == "input":
        return input_scores(pairs, round_y=scoring.round_y, keep_outputs=keep_outputs, **opts)
    if key == "bicubic":
        return bicubic_scores(pairs, scale=scoring.scale, round_y=scoring.round_y,
                              keep_outputs=keep_outputs, **opts)
    raise ValueError(f"unknown baseline {key!r}; choose 'bicubic', 'input' or 'nl_means'")


def psnr_ssim(result: EvalResult) -> dict[str, float]:
    """`{"psnr", "ssim"}` of a result, as eval_results.json and evaluate.py's --json hold them."""
    return {"psnr": float(result.psnr), "ssim": float(result.ssim)}


class EvalSuite:
    """Evaluation sets with their baselines scored once, and a model scored on any of them.

    `sets`: name -> EvalSet; `baselines`: baseline key -> set name -> EvalResult (the main
    baseline's images kept with `keep_baseline_outputs`, for side-by-side pictures)."""

    def __init__(self, sets: Sequence[EvalSet], scoring: Scoring, *,
                 keep_baseline_outputs: bool = False):
        self.sets = {s.name: s for s in sets}
        self.scoring = scoring
        self.baselines = {
            key: {s.name: score_baseline(key, s.pairs, scoring,
                                         keep_outputs=keep_baseline_outputs and i == 0)
                  for s in sets}
            for i, key in enumerate(scoring.baselines)}

    def baselines_of(self, name: str) -> dict[str, EvalResult]:
        """Every baseline's result on set `name`, main baseline first."""
        return {key: results[name] for key, results in self.baselines.items()}

    def score(self, apply_fn: ApplyFn, variables: Any, name: str, *, keep_outputs: bool = False,
              progress: bool = False, indices: Sequence[int] | None = None) -> EvalResult:
        """`apply_fn(variables, ...)` (e.g. `model.apply`) on set `name` (only its pairs at
        `indices` when given), scored as the baselines."""
        s = self.scoring
        pairs = self.sets[name].pairs
        if indices is not None:
            pairs = [pairs[i] for i in indices]
        return evaluate_pairs(apply_fn, variables, pairs, scale=s.scale,
                              crop_border=s.crop_border, y_channel=s.y_channel, round_y=s.round_y,
                              self_ensemble=s.self_ensemble, bucket=s.bucket, progress=progress,
                              keep_outputs=keep_outputs)
