"""What a deployer asks: latency and peak memory of MSPAN x4 and IMDN x4 on a 320x180 LR image
(1280x720 out) through onnxruntime (float32 and float16 files, default threads), LiteRT (the
float32 and float16-weight TFLite files, one thread per core), the JAX path and PyTorch eager (the
project's reference models, mspan_jax/convert); the size of each export; and the Set5 x4 PSNR of
each ONNX and TFLite file.

    python benchmarks/deploy.py [--runs 3] [--models mspan,imdn] [--backends ...] [--no-set5] [--json]

Each backend runs in its own process (peak RSS is per process: runtime, weights and activations,
after its imports), one warm-up call first (JAX: its compile), then the median of --runs calls.
MSPAN x4 uses the shipped weights (weights/mspan_x4); IMDN x4 the official weights when
../shared/weights/IMDN_x4.pth is there, else its initial ones (the time does not depend on them).
Needs the [onnx], [tflite] and [torch] extras.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LR_HW = (180, 320)
ROOT = Path(__file__).resolve().parents[1]
IMDN_WEIGHTS = ROOT.parent / "shared" / "weights" / "IMDN_x4.pth"
BACKENDS = ("onnxruntime-fp32", "onnxruntime-fp16", "litert-fp32", "litert-fp16", "jax", "pytorch")
FILE_BACKENDS = BACKENDS[:4]  # the ones that run an exported file


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"unknown CPU ({os.cpu_count()} cores)"


def load(name: str):
    from mspan_jax.checkpoints.resolve import load_model

    if name == "mspan":
        return load_model("mspan_x4")
    if IMDN_WEIGHTS.is_file():
        return load_model(IMDN_WEIGHTS, model=("imdn", 4))
    import jax
    import jax.numpy as jnp

    from mspan_jax.checkpoints.resolve import LoadedModel
    from mspan_jax.config_base import sr_config
    from mspan_jax.models.registry import get_model

    config = sr_config(model="imdn", scale=4)
    model = get_model(config.model)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    return LoadedModel(config, model, variables)


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the forking parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(backend: str, name: str, files: dict[str, str], runs: int) -> dict[str, float]:
    """One backend's timings and memory, in this process."""
    x = np.random.default_rng(0).random((1, 3, *LR_HW), dtype=np.float32)
    if backend.startswith("onnxruntime"):
        import onnxruntime as ort

        base = peak_rss_mb()
        sess = ort.InferenceSession(files[backend], providers=["CPUExecutionProvider"])

        def call():
            return sess.run(None, {"lr": x})[0]
    elif backend.startswith("litert"):
        from mspan_jax.deploy.tflite_runtime import TfliteModel

        base = peak_rss_mb()
        tflite = TfliteModel(files[backend], num_threads=os.cpu_count())
        xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))

        def call():
            return tflite(xh)
    elif backend == "jax":
        import jax

        loaded = load(name)
        base = peak_rss_mb()
        fn = jax.jit(loaded.model.apply)
        xh = x.transpose(0, 2, 3, 1)

        def call():
            return np.asarray(fn(loaded.variables, xh))
    else:
        import torch

        from mspan_jax.convert.rules import to_state_dict
        from mspan_jax.convert.torch_reference import build_torch_model

        loaded = load(name)
        module = build_torch_model(loaded.model_config)
        state = to_state_dict(loaded.model_config, loaded.variables)
        module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
        base = peak_rss_mb()
        xt = torch.from_numpy(x)

        def call():
            with torch.no_grad():
                return module(xt).numpy()
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return {"first_s": first, "median_s": statistics.median(times), "base_rss_mb": base,
            "peak_rss_mb": peak_rss_mb()}


def export_files(name: str, folder: Path) -> dict[str, str]:
    from mspan_jax.deploy.onnx_export import export_onnx

    loaded = load(name)
    files = {}
    for precision, key in (("float32", "onnxruntime-fp32"), ("float16", "onnxruntime-fp16")):
        path = folder / f"{name}_x4_{precision}.onnx"
        path.write_bytes(export_onnx(loaded.model_config, loaded.variables,
                                     precision=precision).SerializeToString())
        files[key] = str(path)
    from mspan_jax.deploy.tflite_export import export_tflite

    for precision, key in (("float32", "litert-fp32"), ("float16", "litert-fp16")):
        path = folder / f"{name}_x4_{precision}.tflite"
        path.write_bytes(export_tflite(loaded.model_config, loaded.variables, precision=precision))
        files[key] = str(path)
    sys.path.insert(0, str(ROOT / "scripts"))
    from export import export_model

    exported = export_model(loaded.model, loaded.variables, 3, ["cpu"])
    path = folder / f"{name}_x4.jaxexport"
    path.write_bytes(bytes(exported.serialize()))
    files["jaxexport"] = str(path)
    return files


def set5_psnr(files: dict[str, str]) -> dict[str, float]:
    """Mean Set5 x4 PSNR (Y, border 4, the papers' convention) of each ONNX and TFLite file."""
    from PIL import Image

    from mspan_jax import Upscaler
    from mspan_jax.metrics import psnr

    set5 = ROOT.parent / "shared" / "data" / "Set5"
    out = {}
    for key in FILE_BACKENDS:
        up = Upscaler.from_checkpoint(files[key])
        scores = []
        for hr_path in sorted((set5 / "HR").iterdir()):
            lr_path = set5 / "LR_bicubic" / "X4" / f"{hr_path.stem}x4.bmp"
            lr = np.asarray(Image.open(lr_path).convert("RGB"))
            hr = np.asarray(Image.open(hr_path).convert("RGB"))
            scores.append(psnr(up.upscale(lr), hr, crop_border=4))
        out[key] = float(np.mean(scores))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-set5", action="store_true", help="skip the float16 PSNR on Set5")
    parser.add_argument("--models", default="mspan,imdn", help="of mspan, imdn (x4)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"of {', '.join(BACKENDS)}; "
                        "'' for the files and PSNR alone")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", nargs=3, metavar=("BACKEND", "MODEL", "FILES_JSON"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        backend, name, files = args.worker
        print(json.dumps(worker(backend, name, json.loads(files), args.runs)))
        return
    results: dict[str, object] = {"cpu": cpu_model(), "lr": f"{LR_HW[1]}x{LR_HW[0]}", "models": {}}
    print(f"CPU: {results['cpu']}; LR {LR_HW[1]}x{LR_HW[0]} -> 1280x720; median of {args.runs} runs",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m for m in args.models.split(",") if m]:
            files = export_files(name, Path(tmp))
            row: dict[str, object] = {"file_mb": {k: os.path.getsize(v) / 1e6
                                                  for k, v in files.items()}}
            for backend in [b for b in args.backends.split(",") if b]:
                proc = subprocess.run([sys.executable, __file__, "--runs", str(args.runs), "--worker",
                                       backend, name, json.dumps(files)],
                                      capture_output=True, text=True, check=True)
                row[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
                r = row[backend]
                print(f"{name} x4 {backend:>16}: {r['median_s'] * 1000:7.0f} ms (first call "
                      f"{r['first_s']:.1f} s), peak RSS {r['peak_rss_mb']:.0f} MB "
                      f"({r['peak_rss_mb'] - r['base_rss_mb']:.0f} MB over the loaded runtime)",
                      flush=True)
            print(f"{name} x4 files: " + ", ".join(f"{k} {v:.2f} MB"
                                                  for k, v in row["file_mb"].items()), flush=True)
            if name == "mspan" and not args.no_set5:
                row["set5_psnr"] = set5_psnr(files)
                scores = row["set5_psnr"]
                print(f"{name} x4 Set5 PSNR (Y): " + ", ".join(f"{k} {v:.4f} dB" for k, v in
                                                              scores.items())
                      + "; float16 - float32: " + ", ".join(
                          f"{rt} {scores[rt + '-fp16'] - scores[rt + '-fp32']:+.4f} dB"
                          for rt in ("onnxruntime", "litert")), flush=True)
            results["models"][name] = row
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
