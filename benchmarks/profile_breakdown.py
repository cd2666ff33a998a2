"""Where a step's (or an image's) wall time goes, from the two frameworks' own profilers, in
categories that mean the same on both sides: `speed.py --profile` prints these beside its timings.

- Ours: `jax.profiler.trace(..., create_perfetto_trace=True)` records one event per XLA:CPU thunk
  (an op or fusion of the compiled program) on the thread that ran it. `jax_breakdown` takes each
  op's self time, classifies it by what the compiled HLO says the instruction is (a convolution
  or dot inside the fusion; forward or backward from JAX's `jvp` / `transpose` metadata; XLA's
  kernel-gradient fusions carry none: backward), sums it over threads and divides by the cores,
  so each category is the wall time it would take with the cores sharing it evenly.
- PyTorch: `torch.profiler`'s self CPU time per aten op (the op's wall time on the thread that
  called it, its OpenMP threads working inside), summed by `torch_breakdown` into the same
  categories. PyTorch runs every 1x1 as a convolution; ours are dots, so both count as convs.

On both sides the remainder of the wall time is `NOT_IN_OP`: for us the cores' time outside every
op (XLA:CPU's executor between ops, a device waiting for the other, dispatch); for PyTorch the
calling thread's time outside every aten op (Python, autograd, the optimizer's loop). The
profilers add a little per op: read the categories against each other, and the step times from
`speed.py`'s unprofiled rounds.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
from pathlib import Path
from typing import Any

CONV_FORWARD = "convolutions and 1x1 matmuls, forward"
CONV_BACKWARD = "convolutions and 1x1 matmuls, backward (input and kernel gradients)"
OTHER_FORWARD = "elementwise, pooling, resize, concat: forward"
OTHER_BACKWARD = "elementwise, pooling, resize, concat: backward"
LAYOUT = "layout copies (transposes XLA inserts)"
ALL_REDUCE = "gradient all-reduce (incl. waiting for the other device)"
UPDATE = "optimizer update and loss"
NOT_IN_OP = "in no op (scheduling between ops, waiting, host dispatch, Python)"

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = [^\n]*$", re.M)
_OPCODE = re.compile(r"[\]})] ([a-z][a-z\-]*)\(")  # "f32[8]{0} convolution(" -> convolution
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) [^\n]*\{\n(.*?)^\}", re.M | re.S)


def _instructions(hlo_text: str) -> dict[str, tuple[str, str, str]]:
    """Instruction name -> (its opcode, its JAX op_name metadata, the text of the computation it
    calls)."""
    bodies = {m.group(1): m.group(2) for m in _COMPUTATION.finditer(hlo_text)}
    out = {}
    for m in _INSTRUCTION.finditer(hlo_text):
        line = m.group(0)
        opcode = _OPCODE.search(line, line.index(" = "))
        op = re.search(r'metadata=\{op_name="([^"]*)"', line)
        called = re.search(r"calls=%([\w.\-]+)", line)
        out[m.group(1)] = (opcode.group(1) if opcode else "", op.group(1) if op else "",
                           bodies.get(called.group(1), "") if called else "")
    return out


def classify(name: str, instructions: dict[str, tuple[str, str, str]], training: bool = True) -> str:
    """The category of the thunk `name` (an HLO instruction of the profiled program); outside a
    `training` program (no gradient) every op is forward."""
    opcode, op, body = instructions.get(name, (name.split(".")[0], "", ""))
    if opcode.startswith("all-reduce") or name == "Rendezvous":
        return ALL_REDUCE
    backward = "transpose(" in op
    if opcode in ("convolution", "dot") or " convolution(" in body or " dot(" in body:
        return CONV_BACKWARD if backward or not op else CONV_FORWARD  # XLA's kernel-gradient
    if opcode in ("transpose", "copy") or name.startswith("transpose"):  # fusions carry no metadata
        return LAYOUT
    if "jvp(" in op or not training:
        return OTHER_BACKWARD if backward else OTHER_FORWARD
    return UPDATE


def _self_times(events: list[dict[str, Any]]) -> None:
    """Adds "self" (microseconds: duration less that of events nested in it) to each of one
    thread's `events`."""
    events.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack: list[dict[str, Any]] = []
    for e in events:
        e["self"] = e["dur"]
        while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
            stack.pop()
        if stack:
            stack[-1]["self"] -= e["dur"]
        stack.append(e)


def jax_breakdown(trace_dir: str | Path, hlo_text: str, module: str, cores: int) -> dict[str, Any]:
    """{"per_call_ms": wall per call of `module`, "threads": threads that ran its ops,
    "categories": {category: ms per call}} from the newest Perfetto trace under `trace_dir` (the
    module's calls back to back inside the trace). A category's ms are its ops' self time summed
    over threads and divided by `cores` (the CPUs the program can use), so that, with `NOT_IN_OP`
    (the cores' time in no op), they add up to the wall time per call, as PyTorch's do."""
    traces = sorted(Path(trace_dir).rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise FileNotFoundError(f"{trace_dir}: no Perfetto trace (*.trace.json.gz) written")
    events = json.loads(gzip.decompress(traces[-1].read_bytes()))["traceEvents"]
    by_thread: dict[Any, list[dict[str, Any]]] = collections.defaultdict(list)
    for e in events:  # an op: a thunk event of `module` (its completion markers are not)
        args = e.get("args", {})
        if (e.get("ph") == "X" and args.get("hlo_module") == module and "hlo_op" in args
                and not e["name"].startswith("end: ")):
            by_thread[(e["pid"], e["tid"])].append(e)
    if not by_thread:
        raise ValueError(f"the trace has no thunk of {module}")
    totals: collections.Counter[str] = collections.Counter()
    instructions, training = _instructions(hlo_text), "jvp(" in hlo_text
    for ops in by_thread.values():
        _self_times(ops)
        for e in ops:
            totals[classify(e["name"], instructions, training)] += e["self"]
    ops = [e for thread_ops in by_thread.values() for e in thread_ops]
    calls = max(1, len({e["args"].get("run_id") for e in ops}))
    wall = (max(e["ts"] + e["dur"] for e in ops) - min(e["ts"] for e in ops)) / calls / 1e3
    categories = {k: v / calls / cores / 1e3 for k, v in totals.most_common()}
    categories[NOT_IN_OP] = wall - sum(categories.values())
    return {"per_call_ms": wall, "threads": len(by_thread), "categories": categories}


def torch_category(op: str) -> str:
    """The category of a `torch.profiler` event name (an aten op or a Python-level range)."""
    if "convolution_backward" in op:
        return CONV_BACKWARD
    if "convolution" in op or op in ("aten::mm", "aten::addmm", "aten::bmm"):
        return CONV_FORWARD
    if "Optimizer" in op or "_foreach" in op or "l1_loss" in op:
        return UPDATE
    if "backward" in op:
        return OTHER_BACKWARD
    return OTHER_FORWARD


def torch_breakdown(key_averages: Any, calls: int, wall_s: float) -> dict[str, Any]:
    """The same shape as `jax_breakdown`'s from `torch.profiler.profile().key_averages()` over
    `calls` calls that took `wall_s` seconds; `NOT_IN_OP` is the wall time no op's self time
    covers (Python, autograd bookkeeping, the profiler itself)."""
    totals: collections.Counter[str] = collections.Counter()
    for e in key_averages:
        totals[torch_category(e.key)] += e.self_cpu_time_total
    per_call = wall_s / calls * 1e3
    categories = {k: v / calls / 1e3 for k, v in totals.most_common()}
    categories[NOT_IN_OP] = max(0.0, per_call - sum(categories.values()))
    return {"per_call_ms": per_call, "threads": 1, "categories": categories}
