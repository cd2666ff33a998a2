"""The table of an equal-budget comparison (benchmarks/train_compare.sh): one row per model, the mean
and seed-to-seed spread of Set5 PSNR/SSIM, params, mult-adds and wall time.

  python benchmarks/compare_table.py OUT   # prints the markdown table and writes OUT/table.md
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def runs(out: Path) -> dict[str, list[dict]]:
    """{model: [one dict per seed]} of the finished runs under `out` (<model>_s<seed>/)."""
    rows: dict[str, list[dict]] = defaultdict(list)
    for run in sorted(out.iterdir()):
        results, info = run / "eval_results.json", run / "model_info.json"
        if not run.is_dir() or not results.is_file() or not info.is_file():
            continue
        model, _, seed = run.name.rpartition("_s")
        scores = json.loads(results.read_text())
        dataset = next(k for k in scores if k not in ("step", "bicubic"))
        rows[model].append({"seed": int(seed), "step": scores["step"], **scores[dataset],
                            "bicubic": scores["bicubic"][dataset],
                            "wall_s": int((run / "wall_s").read_text()),
                            **json.loads(info.read_text())})
    return rows


def table(rows: dict[str, list[dict]]) -> str:
    lines = ["| model | seeds | steps | Set5 x4 PSNR (dB) | SSIM | params | mult-adds (720p) "
             "| wall time / run |", "|---|---|---|---|---|---|---|---|"]
    bicubic = None
    for model, seeds in rows.items():
        psnr = [s["psnr"] for s in seeds]
        ssim = [s["ssim"] for s in seeds]
        spread = f" (±{(max(psnr) - min(psnr)) / 2:.2f})" if len(psnr) > 1 else ""
        per_seed = ", ".join(f"{s['psnr']:.2f}" for s in sorted(seeds, key=lambda s: s["seed"]))
        lines.append(f"| {model} | {','.join(str(s['seed']) for s in seeds)} | {seeds[0]['step']} | "
                     f"{sum(psnr) / len(psnr):.2f}{spread} [{per_seed}] | {sum(ssim) / len(ssim):.4f} | "
                     f"{seeds[0]['params']:,} | {seeds[0]['macs_g']:.1f} G | "
                     f"{sum(s['wall_s'] for s in seeds) / len(seeds) / 60:.1f} min |")
        bicubic = seeds[0]["bicubic"]
    if bicubic:
        lines.append(f"| bicubic | - | - | {bicubic['psnr']:.2f} | {bicubic['ssim']:.4f} | 0 | - | - |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) != 2 or not Path(argv[1]).is_dir():
        sys.exit(f"usage: {argv[0]} OUT (a folder of benchmarks/train_compare.sh runs)")
    out = Path(argv[1])
    rows = runs(out)
    if not rows:
        sys.exit(f"error: {out} holds no finished run (<model>_s<seed>/eval_results.json)")
    text = table(rows)
    (out / "table.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main(sys.argv)
