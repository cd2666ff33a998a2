"""A traced JAX function (its jaxpr) as an ONNX graph, for the primitives the SR models use.

`to_onnx(fn, spec)` traces `fn` at `spec`, whose shape may hold symbolic dimensions
(`jax.export.symbolic_shape`), and writes each equation as ONNX nodes. Shapes that depend on the
symbolic sizes (the reshapes of a pooling, a pixel shuffle's, the slices of a shifted-window conv,
the source taps of a bilinear resize: `iota` and `dim_as_value` of a pooled size) are computed in
the graph from the input's runtime `Shape`, so one file runs at every input size the traced
function accepts. The walk itself (inlined calls, constants folded into initializers, symbolic
sizes) is `jaxpr_walk`'s, shared with the TensorFlow writer (`jaxpr_tf`); this module holds the
ONNX rules. A primitive without a rule raises `UnsupportedPrimitiveError` naming it.

Why not jax2onnx: every release on the index pins orbax-checkpoint < 0.11.37 (this project uses
0.12) and brings equinox, dm-pix, huggingface-hub and netron; and it fails on MSPA's bilinear
resize with symbolic sizes. The models need ~50 primitives, each a line or two here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mspan_jax.deploy.jaxpr_walk import (
    Emitter,
    Rule,
    UnsupportedPrimitiveError,
    einsum_equation,
    gather_form,
    is_symbolic,
    rule_table,
    same,
    slice_starts,
    walk,
)

__all__ = ["DEFAULT_OPSET", "UnsupportedPrimitiveError", "to_onnx"]

DEFAULT_OPSET = 17
_DIM_OPS = {"add": "Add", "sub": "Sub", "mul": "Mul", "floordiv": "Div", "mod": "Mod"}


def _onnx_dtype(dtype: Any) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


RULES, _rule = rule_table()


class _Graph(Emitter):
    """Nodes and initializers being built, with the known values of constant tensors; sizes are
    int64 [1] tensors (ONNX Div on non-negative sizes is floor division)."""

    format_name = "ONNX"
    rules = RULES

    def __init__(self, opset: int):
        super().__init__()
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.values: dict[str, np.ndarray] = {}  # constant tensors' values, for folding
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: Any, hint: str = "const") -> str:
        array = np.asarray(value)
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        self.values[name] = array
        return name

    def known(self, handle: str) -> np.ndarray | None:
        return self.values.get(handle)

    def size(self, value: int) -> str:
        return self.const(np.array([value], np.int64))

    def dim_op(self, op: str, a: str, b: str) -> str:
        return self.op(_DIM_OPS[op], [a, b])

    def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs: Any) -> Any:
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def shape(self, dims: Sequence[Any]) -> str:
        """An int64 1-D tensor of the sizes `dims` (ints or symbolic)."""
        if not any(is_symbolic(d) for d in dims):
            return self.const(np.array([int(d) for d in dims], np.int64))
        return self.op("Concat", [self.dim(d) for d in dims], axis=0)

    def axes(self, axes: Sequence[int]) -> str:
        return self.const(np.array(list(axes), np.int64))

    def prune(self, output: str) -> None:
        """Drops the nodes and initializers `output` does not depend on (folded-away weights, the
        float32 weights of a float16 graph)."""
        needed, kept = {output}, []
        for node in reversed(self.nodes):
            if needed.intersection(node.output):
                kept.append(node)
                needed.update(node.input)
        self.nodes = kept[::-1]
        self.initializers = [t for t in self.initializers if t.name in needed]


def _simple(op_type: str) -> Rule:
    def rule(g: _Graph, ins: list[str], in_avals: list[Any], out_avals: list[Any],
             params: dict[str, Any]) -> list[str]:
        return [g.op(op_type, ins)]
    return rule


for _prim, _op in {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max",
                   "min": "Min", "pow": "Pow", "eq": "Equal", "lt": "Less", "le": "LessOrEqual",
                   "gt": "Greater", "ge": "GreaterOrEqual", "and": "And", "or": "Or", "not": "Not",
                   "neg": "Neg", "exp": "Exp", "log": "Log", "tanh": "Tanh", "logistic": "Sigmoid",
                   "erf": "Erf", "sqrt": "Sqrt", "floor": "Floor", "ceil": "Ceil", "abs": "Abs",
                   "sign": "Sign", "copy": "Identity", "copy_p": "Identity",
                   "reduce_precision": "Identity", "sharding_constraint": "Identity",
                   "optimization_barrier": "Identity"}.items():
    RULES[_prim] = _simple(_op)


@_rule("ne")
def _ne(g, ins, in_avals, out_avals, params):
    return [g.op("Not", [g.op("Equal", ins)])]


@_rule("rem")
def _rem(g, ins, in_avals, out_avals, params):  # lax.rem is C's remainder (sign of the dividend)
    return [g.op("Mod", ins, fmod=1)]


@_rule("rsqrt")
def _rsqrt(g, ins, in_avals, out_avals, params):
    return [g.op("Reciprocal", [g.op("Sqrt", ins)])]


@_rule("erfc")
def _erfc(g, ins, in_avals, out_avals, params):
    one = g.const(np.asarray(1, in_avals[0].dtype))
    return [g.op("Sub", [one, g.op("Erf", ins)])]


@_rule("square")
def _square(g, ins, in_avals, out_avals, params):
    return [g.op("Mul", [ins[0], ins[0]])]


@_rule("integer_pow")
def _integer_pow(g, ins, in_avals, out_avals, params):
    y = int(params["y"])
    if y == 2:
        return [g.op("Mul", [ins[0], ins[0]])]
    exponent = g.const(np.asarray(y, in_avals[0].dtype))
    return [g.op("Pow", [ins[0], exponent])]


@_rule("select_n")
def _select_n(g, ins, in_avals, out_avals, params):
    if len(ins) != 3:
        raise UnsupportedPrimitiveError(f"select_n with {len(ins) - 1} cases (ONNX rule: 2)")
    which = ins[0]
    if in_avals[0].dtype != np.bool_:
        which = g.op("Cast", [which], to=TensorProto.BOOL)
    return [g.op("Where", [which, ins[2], ins[1]])]


@_rule("clamp")
def _clamp(g, ins, in_avals, out_avals, params):
    low, x, high = ins
    return [g.op("Max", [g.op("Min", [x, high]), low])]


@_rule("convert_element_type")
def _convert(g, ins, in_avals, out_avals, params):
    if np.dtype(in_avals[0].dtype) == np.dtype(out_avals[0].dtype):
        return [g.op("Identity", ins)]
    return [g.op("Cast", ins, to=_onnx_dtype(out_avals[0].dtype))]


@_rule("broadcast_in_dim")
def _broadcast_in_dim(g, ins, in_avals, out_avals, params):
    shape, dims = tuple(params["shape"]), tuple(params["broadcast_dimensions"])
    x, in_shape = ins[0], tuple(in_avals[0].shape)
    missing = [i for i in range(len(shape)) if i not in dims]
    if missing:
        x = g.op("Unsqueeze", [x, g.axes(missing)])
    full = [1] * len(shape)
    for src, dst in enumerate(dims):
        full[dst] = in_shape[src]
    if all(not is_symbolic(a) and not is_symbolic(b) and a == b for a, b in zip(full, shape,
                                                                                 strict=True)):
        return [x if missing else g.op("Identity", [x])]
    return [g.op("Expand", [x, g.shape(shape)])]


@_rule("reshape")
def _reshape(g, ins, in_avals, out_avals, params):
    if params.get("dimensions") is not None:
        raise UnsupportedPrimitiveError("reshape with dimensions")
    return [g.op("Reshape", [ins[0], g.shape(tuple(params["new_sizes"]))])]


@_rule("squeeze")
def _squeeze(g, ins, in_avals, out_avals, params):
    return [g.op("Squeeze", [ins[0], g.axes(params["dimensions"])])]


@_rule("transpose")
def _transpose(g, ins, in_avals, out_avals, params):
    return [g.op("Transpose", ins, perm=[int(p) for p in params["permutation"]])]


@_rule("concatenate")
def _concatenate(g, ins, in_avals, out_avals, params):
    return [g.op("Concat", ins, axis=int(params["dimension"]))]


@_rule("split")
def _split(g, ins, in_avals, out_avals, params):
    sizes = g.shape(tuple(params["sizes"]))
    outs = g.op("Split", [ins[0], sizes], outputs=len(out_avals), axis=int(params["axis"]))
    return [outs] if len(out_avals) == 1 else outs


@_rule("pad")
def _pad(g, ins, in_avals, out_avals, params):
    config = params["padding_config"]
    if any(interior != 0 for _, _, interior in config):
        raise UnsupportedPrimitiveError("pad with interior padding")
    pads = [lo for lo, _, _ in config] + [hi for _, hi, _ in config]
    return [g.op("Pad", [ins[0], g.shape(pads), ins[1]], mode="constant")]


@_rule("slice")
def _slice(g, ins, in_avals, out_avals, params):
    starts, limits = tuple(params["start_indices"]), tuple(params["limit_indices"])
    strides = params["strides"] or (1,) * len(starts)
    in_shape = tuple(in_avals[0].shape)
    axes = [i for i in range(len(starts))
            if not (same(starts[i], 0) and strides[i] == 1 and same(limits[i], in_shape[i]))]
    if not axes:
        return [g.op("Identity", ins)]
    return [g.op("Slice", [ins[0], g.shape([starts[i] for i in axes]),
                           g.shape([limits[i] for i in axes]), g.axes(axes),
                           g.axes([strides[i] for i in axes])])]


def _reduce(op_type: str) -> Rule:
    def rule(g, ins, in_avals, out_avals, params):
        axes = [int(a) for a in params["axes"]]
        if op_type == "ReduceSum" or g.opset >= 18:
            return [g.op(op_type, [ins[0], g.axes(axes)], keepdims=0)]
        return [g.op(op_type, ins, axes=axes, keepdims=0)]
    return rule


RULES["reduce_sum"] = _reduce("ReduceSum")
RULES["reduce_max"] = _reduce("ReduceMax")
RULES["reduce_min"] = _reduce("ReduceMin")


def _spatial_layout(rank: int, spatial: Sequence[int]) -> tuple[list[int], list[int]]:
    """(perm to put the non-`spatial` axes first, its inverse)."""
    perm = [i for i in range(rank) if i not in spatial] + list(spatial)
    return perm, [int(i) for i in np.argsort(perm)]


def _reduce_window(kind: str) -> Rule:
    def rule(g, ins, in_avals, out_avals, params):
        window, strides = tuple(params["window_dimensions"]), tuple(params["window_strides"])
        padding = tuple(params["padding"])
        rank = len(window)
        spatial = [i for i in range(rank) if window[i] != 1 or strides[i] != 1 or padding[i] != (0, 0)]
        if len(spatial) > rank - 2 or any(d != 1 for d in params["base_dilation"]):
            raise UnsupportedPrimitiveError(f"reduce_window_{kind} over axes {spatial}")
        spatial = sorted(set(spatial) | set(range(2, rank))) if len(spatial) < rank - 2 else spatial
        spatial = spatial[-(rank - 2):]
        perm, inverse = _spatial_layout(rank, spatial)
        x = g.op("Transpose", ins[:1], perm=perm)
        attrs = dict(kernel_shape=[int(window[i]) for i in spatial],
                     strides=[int(strides[i]) for i in spatial],
                     pads=[int(padding[i][0]) for i in spatial] + [int(padding[i][1]) for i in spatial],
                     dilations=[int(params["window_dilation"][i]) for i in spatial])
        if kind == "max":
            y = g.op("MaxPool", [x], **attrs)
        else:  # a window sum: the average over the window (padding counted) times its size
            mean = g.op("AveragePool", [x], count_include_pad=1, **attrs)
            size = g.const(np.asarray(np.prod(attrs["kernel_shape"]), in_avals[0].dtype))
            y = g.op("Mul", [mean, size])
        return [g.op("Transpose", [y], perm=inverse)]
    return rule


RULES["reduce_window_max"] = _reduce_window("max")
RULES["reduce_window_sum"] = _reduce_window("sum")


@_rule("conv_general_dilated")
def _conv(g, ins, in_avals, out_avals, params):
    lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
    if any(d != 1 for d in params["lhs_dilation"]) or params["batch_group_count"] != 1:
        raise UnsupportedPrimitiveError("conv_general_dilated with lhs dilation or batch groups")
    x = g.op("Transpose", ins[:1], perm=[int(i) for i in lhs_spec])  # N, C, spatial...
    rhs_perm = [int(i) for i in rhs_spec]  # O, I, spatial...
    if g.known(ins[1]) is not None:
        kernel = g.const(np.ascontiguousarray(np.transpose(g.values[ins[1]], rhs_perm)), "kernel")
    else:
        kernel = g.op("Transpose", ins[1:2], perm=rhs_perm)
    padding = params["padding"]
    y = g.op("Conv", [x, kernel], strides=[int(s) for s in params["window_strides"]],
             pads=[int(lo) for lo, _ in padding] + [int(hi) for _, hi in padding],
             dilations=[int(d) for d in params["rhs_dilation"]],
             group=int(params["feature_group_count"]))
    return [g.op("Transpose", [y], perm=[int(i) for i in np.argsort(out_spec)])]


@_rule("dot_general")
def _dot_general(g, ins, in_avals, out_avals, params):
    equation = einsum_equation(params, len(in_avals[0].shape), len(in_avals[1].shape))
    y = g.op("MatMul", ins) if equation is None else g.op("Einsum", ins, equation=equation)
    if np.dtype(out_avals[0].dtype) != np.dtype(in_avals[0].dtype):
        y = g.op("Cast", [y], to=_onnx_dtype(out_avals[0].dtype))
    return [y]


@_rule("iota")
def _iota(g, ins, in_avals, out_avals, params):
    shape, dimension = tuple(params["shape"]), int(params["dimension"])
    dtype = np.dtype(params["dtype"])
    n = g.dim(shape[dimension])
    if dtype.kind == "f":
        limit = g.op("Cast", [g.op("Squeeze", [n])], to=_onnx_dtype(dtype))
    else:
        limit = g.op("Squeeze", [n])
        if dtype != np.int64:
            limit = g.op("Cast", [limit], to=_onnx_dtype(dtype))
    y = g.op("Range", [g.const(np.asarray(0, dtype)), limit, g.const(np.asarray(1, dtype))])
    if len(shape) == 1:
        return [y]
    others = [i for i in range(len(shape)) if i != dimension]
    y = g.op("Unsqueeze", [y, g.axes(others)])
    return [g.op("Expand", [y, g.shape(shape)])]


@_rule("dim_as_value")
def _dim_as_value(g, ins, in_avals, out_avals, params):
    value = g.op("Squeeze", [g.dim(params["dim"])])
    return [g.op("Cast", [value], to=_onnx_dtype(out_avals[0].dtype))]


@_rule("gather")
def _gather(g, ins, in_avals, out_avals, params):
    """A slice at start indices (ONNX Slice), or `jnp.take` along an axis (ONNX Gather)."""
    form, detail = gather_form(in_avals, params)
    if form == "take":
        indices = g.op("Squeeze", [ins[1], g.axes([1])])
        return [g.op("Gather", [ins[0], indices], axis=detail)]
    axes, sizes = detail
    known = g.known(ins[1])
    if known is not None:
        first = slice_starts(known, in_avals[0].shape, axes, sizes)
        begin = g.shape(first)
        end = g.shape([f + n for f, n in zip(first, sizes, strict=True)])
    else:
        begin = g.op("Cast", [ins[1]], to=TensorProto.INT64)
        end = g.op("Add", [begin, g.shape(sizes)])
    return [g.op("Slice", [ins[0], begin, end, g.axes(axes)])]


def _value_info(name: str, aval: Any) -> onnx.ValueInfoProto:
    dims = [str(d) if is_symbolic(d) else int(d) for d in aval.shape]
    return helper.make_tensor_value_info(name, _onnx_dtype(aval.dtype), dims)


def to_onnx(fn: Callable[[jax.Array], jax.Array], spec: jax.ShapeDtypeStruct, *,
            input_name: str = "input", output_name: str = "output", opset: int = DEFAULT_OPSET,
            graph_name: str = "model") -> onnx.ModelProto:
    """The ONNX model of `fn` (one array in, one out) traced at `spec`; a symbolic dimension of
    `spec` becomes a named dimension of the graph's input (its variable's name) and stays free."""
    closed = jax.make_jaxpr(fn)(spec)
    jaxpr = closed.jaxpr
    (in_var,), (out_var,) = jaxpr.invars, jaxpr.outvars
    g = _Graph(opset)
    if any(is_symbolic(d) for d in spec.shape):
        shape = g.op("Shape", [input_name])
        g.bind_input_sizes(spec, lambda i: g.op("Slice", [shape, g.axes([i]), g.axes([i + 1])]))
    (out,) = walk(g, jaxpr, closed.consts, [input_name])
    g.nodes.append(helper.make_node("Identity", [out], [output_name]))
    g.prune(output_name)
    graph = helper.make_graph(g.nodes, graph_name, [_value_info(input_name, in_var.aval)],
                              [_value_info(output_name, out_var.aval)], g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    # The lowest IR version of the opset, so that runtimes older than this onnx package load it.
    return helper.make_model(graph, opset_imports=opsets, producer_name="mspan-jax",
                             ir_version=helper.find_min_ir_version_for(opsets))

