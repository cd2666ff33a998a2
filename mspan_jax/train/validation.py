"""Validation during training: the run's evaluation suite (`eval_suite`, the sets and scoring that
scripts/evaluate.py uses) scored on the current params, eval_results.json content, and labelled
baseline | model | target pictures for TensorBoard and WORKDIR/samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from mspan_jax.config_base import RESTORATION_TASKS, task_of
from mspan_jax.data.images import to_uint8
from mspan_jax.data.pairs import EvalPair
from mspan_jax.drawing import Panel, panel_grid
from mspan_jax.eval_suite import EvalSuite, Scoring, load_sets, psnr_ssim
from mspan_jax.evaluation import EvalResult, ImageScore
from mspan_jax.train.state import PyTree

# TensorBoard image tag (eval/<set>/<tag>) of the validation pictures, by task: what the three
# columns hold. SR's tag is fixed, so pictures of runs of any release line up in TensorBoard.
PICTURE_TAGS = {"sr": "bicubic_sr_hr", "denoise": "input_model_target", "derain": "input_model_target"}


def picture_tag(task: str) -> str:
    """The TensorBoard tag of `task`'s validation pictures (baseline | model | target)."""
    return PICTURE_TAGS[task]


def summary_figure(pairs: Sequence[EvalPair], baseline: EvalResult, result: EvalResult, size: int,
                   model_label: str, task: str) -> np.ndarray:
    """One row per pair: centred `size` crops of baseline | model | target (SR: bicubic | SR | HR;
    restoration: LQ input | restored | ground truth), each labelled with its whole-image PSNR / SSIM
    (drawing.panel_grid), as a uint8 (H, W, 3) picture (a gray model's crops repeated to three
    channels; a float noisy input rounded)."""
    restoration = task in RESTORATION_TASKS
    base_label = ("noisy input" if task == "denoise" else "rainy input") if restoration else "bicubic"
    ref_label = "ground truth" if restoration else "HR"
    base_scores = {s.name: s for s in baseline.images}
    model_scores = {s.name: s for s in result.images}
    panels = []
    for pair in pairs:
        h, w = pair.hr.shape[:2]
        top, left = (h - size) // 2, (w - size) // 2

        def crop(img: np.ndarray, top=top, left=left) -> np.ndarray:
            img = img[top:top + size, left:left + size]
            if img.dtype != np.uint8:  # a float noisy input (0..255, unclipped), shown rounded
                img = to_uint8(img / 255.0)
            return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img

        b, m = base_scores[pair.name], model_scores[pair.name]
        panels += [Panel(crop(baseline.outputs[pair.name]), base_label,
                         f"{b.psnr:.2f} dB / {b.ssim:.4f}"),
                   Panel(crop(result.outputs[pair.name]), model_label,
                         f"{m.psnr:.2f} dB / {m.ssim:.4f}"),
                   Panel(crop(pair.hr), f"{ref_label}: {pair.name}", "reference")]
    return panel_grid(panels, columns=3)


def process_share(pairs: Sequence[EvalPair], index: int, count: int, first: int = 0) -> list[int]:
    """Indices of the `pairs` that process `index` of `count` scores, the same split computed on
    every process: the first `first` (the pictures' pairs) on process 0, then each of the rest,
    largest HR first, to the process with the fewest pixels so far (ties: the lowest index)."""
    loads = [0] * count
    shares: list[list[int]] = [[] for _ in range(count)]
    first = min(first, len(pairs))
    pixels = [pair.hr.shape[0] * pair.hr.shape[1] for pair in pairs]
    for i in range(first):
        shares[0].append(i)
        loads[0] += pixels[i]
    for i in sorted(range(first, len(pairs)), key=lambda i: (-pixels[i], i)):
        p = loads.index(min(loads))
        shares[p].append(i)
        loads[p] += pixels[i]
    return sorted(shares[index])


def gather_scores(pairs: Sequence[EvalPair], share: Sequence[int], local: EvalResult | None,
                  count: int, largest: int) -> EvalResult:
    """Every process's per-image scores (of its `share`, at most `largest` images) gathered into one
    EvalResult over all `pairs`, in their order: the means are those one process would compute
    (float64 scores travel as bits). Outputs stay those this process kept."""
    from jax.experimental import multihost_utils

    rows = np.full((largest, 3), -1.0)
    for row, (i, score) in enumerate(zip(share, local.images if local else (), strict=True)):
        rows[row] = (i, score.psnr, score.ssim)
    bits = multihost_utils.process_allgather(rows.view(np.uint32))
    gathered = np.asarray(bits).view(np.float64).reshape(count * largest, 3)
    by_index = {int(i): (p, q) for i, p, q in gathered if i >= 0}
    images = [ImageScore(pair.name, *by_index[i]) for i, pair in enumerate(pairs)]
    return EvalResult(psnr=float(np.mean([s.psnr for s in images])),
                      ssim=float(np.mean([s.ssim for s in images])), images=images,
                      num_compiled=local.num_compiled if local else 0,
                      outputs=local.outputs if local else None)


def host_params(params: PyTree) -> PyTree:
    """Replicated global params as host numpy (works on every process of a multi-host run)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), params)


class Validator:
    """The validation sets of `config.eval` loaded once with their baselines (`self.suite`), and
    PSNR/SSIM of a model on them. With several processes each scores its share of every set's
    images (`process_share`) and all get the gathered scores, equal to one process's.

    The baseline is bicubic for SR and the LQ input itself for restoration; with
    `config.eval.classical_baseline` restoration also scores scikit-image's non-local means once."""

    def __init__(self, config: ml_collections.ConfigDict, model: Any):
        self.config, self.model = config, model
        sets = load_sets(config, data_dir=config.data.get("data_dir") or None,
                         manual_dir=config.data.get("manual_dir") or None)
        self.suite = EvalSuite(sets, Scoring.from_config(config), keep_baseline_outputs=True)

    def __call__(self, params: PyTree) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
        """Scores per dataset and, per dataset, a labelled picture of baseline | model | HR crops."""
        ev, model_config, scores, images = self.config.eval, self.config.model, {}, {}
        main_baseline = self.suite.baselines[self.suite.scoring.baselines[0]]
        index, count = jax.process_index(), jax.process_count()
        for name, eval_set in self.suite.sets.items():
            shown = eval_set.pairs[:ev.num_summary_images]
            if count == 1:
                result = self.suite.score(self.model.apply, {"params": params}, name, keep_outputs=True)
            else:  # each process scores its share of the images; the scores are gathered
                share = process_share(eval_set.pairs, index, count, len(shown))
                largest = max(len(process_share(eval_set.pairs, p, count, len(shown)))
                              for p in range(count))
                local = self.suite.score(self.model.apply, {"params": params}, name,
                                         keep_outputs=index == 0,
                                         indices=share) if share else None
                result = gather_scores(eval_set.pairs, share, local, count, largest)
            scores[name] = psnr_ssim(result)
            if shown and index == 0:  # process 0 scored the pictures' pairs
                size = min([ev.summary_crop_size] + [min(p.hr.shape[:2]) for p in shown])
                images[name] = summary_figure(shown, main_baseline[name], result, size,
                                              f"{model_config.name} x{model_config.scale}",
                                              task_of(self.config))
        return scores, images

    def results_json(self, step: int, scores: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
        """`{"step": n, "<dataset>": {"psnr", "ssim"}, "<baseline>": {"<dataset>": {...}}}`; baseline
        "bicubic" (SR), or "input" and, when scored, "nl_means" (restoration)."""
        results: dict[str, Any] = {"step": step, **scores}
        for key, baseline in self.suite.baselines.items():
            if baseline:
                results[key] = {name: psnr_ssim(r) for name, r in baseline.items()}
        return results
