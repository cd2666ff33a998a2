"""The long structure-aware fuzz of the readers of untrusted files (.pth zip, legacy .pth,
.safetensors, images), with the strategies of tests/fuzz_strategies.py (hypothesis, seeded): each
parser in its own process, reporting executions, rate, findings and peak RSS. Every case must read
or fail with the reader's one-line error; anything else, or a read slower than --slow_s, is a
finding. The short seeded pass of the same strategies runs in CI (tests/test_fuzz_readers.py).

    nice -n 10 python benchmarks/fuzz_readers.py --executions 100000 --seconds 150

Figures: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def run_one(parser: str, executions: int, seconds: float, seed: int, slow_s: float,
            keep: Path | None, per_example: int) -> dict:
    """Fuzzes one parser in this process until `executions` cases or `seconds` have run; the cases
    of the findings are written to `keep` when given. Each hypothesis example seeds a Random from
    which `per_example` cases are generated (hypothesis's own cost, ~1 ms an example, is then
    spread over them)."""
    import fuzz_strategies
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    warnings.simplefilter("ignore")  # the readers' conversion notes
    generate = fuzz_strategies.PARSERS[parser][1]
    findings: list[str] = []
    count = [0]
    start = time.perf_counter()

    class Done(Exception):
        pass

    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        @hypothesis_seed(seed)
        @settings(max_examples=executions, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(st.randoms(use_true_random=True))
        def example(r):
            for _ in range(per_example):
                if time.perf_counter() - start > seconds or count[0] >= executions:
                    raise Done
                data = generate(r)
                began = time.perf_counter()
                finding = fuzz_strategies.check(Path(tmp), parser, data)
                took = time.perf_counter() - began
                if finding is None and took > slow_s:
                    finding = f"took {took:.1f}s"
                if finding is not None and len(findings) < 20:
                    findings.append(finding)
                    if keep is not None:
                        keep.mkdir(parents=True, exist_ok=True)
                        suffix, raw = data if isinstance(data, tuple) else ("", data)
                        (keep / f"{parser}-{len(findings)}{suffix}").write_bytes(raw)
                count[0] += 1

        with contextlib.suppress(Done):
            example()
    elapsed = time.perf_counter() - start
    return {"parser": parser, "executions": count[0], "seconds": round(elapsed, 1),
            "per_second": round(count[0] / elapsed, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "findings": findings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parser", default="all", help="pth_zip, pth_legacy, safetensors, image or all")
    ap.add_argument("--executions", type=int, default=100_000, help="cases per parser (at most)")
    ap.add_argument("--per_example", type=int, default=20,
                    help="cases generated from each hypothesis example's Random")
    ap.add_argument("--seconds", type=float, default=150.0, help="time per parser (at most)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slow_s", type=float, default=5.0, help="a read slower than this is a finding")
    ap.add_argument("--memory_gb", type=float, default=4.0,
                    help="address-space limit per parser process (a runaway read is a MemoryError)")
    ap.add_argument("--keep", type=Path, default=None, help="folder for the cases of the findings")
    args = ap.parse_args()
    if args.parser != "all":
        limit = int(args.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(run_one(args.parser, args.executions, args.seconds, args.seed, args.slow_s,
                                 args.keep, args.per_example)))
        return
    for parser in ("pth_zip", "pth_legacy", "safetensors", "image"):
        flags = ["--parser", parser, "--executions", str(args.executions), "--per_example",
                 str(args.per_example), "--seconds", str(args.seconds), "--seed", str(args.seed),
                 "--slow_s", str(args.slow_s), "--memory_gb", str(args.memory_gb)]
        if args.keep:
            flags += ["--keep", str(args.keep)]
        done = subprocess.run([sys.executable, __file__, *flags], capture_output=True, text=True)
        failed = json.dumps({"parser": parser, "error": done.stderr[-500:]})
        print(done.stdout.strip() or failed, flush=True)


if __name__ == "__main__":
    main()
