"""A traced JAX function (its jaxpr) as TensorFlow ops, for the TFLite converter.

`to_tf_function(fn, spec)` gives the concrete `tf.function` of `fn` traced at `spec`: each
equation becomes the TensorFlow ops that TFLite has builtins for (CONV_2D, STRIDED_SLICE, GATHER,
RANGE, BROADCAST_TO, ...), and each symbolic size is computed from the input's runtime `tf.shape`,
so a graph traced with symbolic batch, height and width keeps them free (`None` in the signature).
The walk (inlined calls, constants folded, symbolic sizes) is `jaxpr_walk`'s, shared with the
ONNX writer; this module holds the TensorFlow rules.

Why not jax2tf: jax 0.10's jax2tf wraps the program in one XlaCallModule (StableHLO), which the
TFLite converter lowers op by op; with symbolic sizes, `jnp.take` in MSPA's bilinear resize is a
`stablehlo.dynamic_gather` (its slice sizes hold the batch and width), which the converter rejects
('vhlo.dynamic_gather_v1' op is not part of the vhlo support yet). It converts at a fixed size only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import tensorflow as tf

from mspan_jax.deploy.jaxpr_walk import (
    Emitter,
    UnsupportedPrimitiveError,
    einsum_equation,
    gather_form,
    is_symbolic,
    rule_table,
    same,
    slice_starts,
    walk,
)

RULES, _rule = rule_table()


class _TFGraph(Emitter):
    """TensorFlow ops being traced into a tf.function; constants stay numpy arrays (what `known`
    reads) until an op takes them, and sizes are int32 scalars."""

    format_name = "TensorFlow"
    rules = RULES

    def const(self, value: Any, hint: str = "const") -> np.ndarray:
        return np.asarray(value)

    def known(self, handle: Any) -> np.ndarray | None:
        return handle if isinstance(handle, np.ndarray) else None

    def size(self, value: int) -> np.ndarray:
        return np.asarray(value, np.int32)

    def dim_op(self, op: str, a: Any, b: Any) -> Any:
        fn = {"add": tf.add, "sub": tf.subtract, "mul": tf.multiply, "floordiv": tf.math.floordiv,
              "mod": tf.math.floormod}[op]
        return fn(a, b)

    def shape(self, dims: Sequence[Any]) -> Any:
        """An int32 1-D tensor (or array) of the sizes `dims` (ints or symbolic)."""
        if not any(is_symbolic(d) for d in dims):
            return np.array([int(d) for d in dims], np.int32)
        return tf.stack([self.dim(d) for d in dims])


def _elementwise(fn: Callable[..., Any]) -> Callable[..., list[Any]]:
    def rule(g, ins, in_avals, out_avals, params):
        return [fn(*ins)]
    return rule


for _prim, _fn in {"add": tf.add, "sub": tf.subtract, "mul": tf.multiply,
                   "max": tf.maximum, "min": tf.minimum, "pow": tf.pow, "eq": tf.equal,
                   "ne": tf.not_equal, "lt": tf.less, "le": tf.less_equal, "gt": tf.greater,
                   "ge": tf.greater_equal, "and": tf.logical_and, "or": tf.logical_or,
                   "not": tf.logical_not, "neg": tf.negative, "exp": tf.exp, "log": tf.math.log,
                   "tanh": tf.tanh, "logistic": tf.sigmoid, "sqrt": tf.sqrt,
                   "rsqrt": tf.math.rsqrt,
                   "floor": tf.floor, "ceil": tf.math.ceil, "abs": tf.abs, "sign": tf.sign,
                   "square": tf.square, "copy": tf.identity, "copy_p": tf.identity,
                   "reduce_precision": tf.identity, "sharding_constraint": tf.identity,
                   "optimization_barrier": tf.identity}.items():
    RULES[_prim] = _elementwise(_fn)


@_rule("div")
def _div(g, ins, in_avals, out_avals, params):  # lax.div on integers truncates (sizes: floor)
    kind = np.dtype(out_avals[0].dtype).kind
    return [tf.math.floordiv(*ins) if kind in "iu" else tf.divide(*ins)]


# float32 erf as the rational approximation Eigen and XLA:CPU use (x clamped to [-4, 4]; highest
# degree first): TFLite has no ERF builtin. Within 3.2e-7 of the exact erf (JAX's: 2e-7), within
# 6e-7 of JAX's; exact GELU (MSPAN-IR's MLP) is x / 2 * erfc(-x / sqrt(2)).
_ERF_NUMERATOR = np.array([-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
                           -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
                           -1.60960333262415e-02], np.float32)
_ERF_DENOMINATOR = np.array([-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                             -7.37332916720468e-03, -1.42647390514189e-02], np.float32)


def _erf(x: Any, dtype: Any) -> Any:
    if np.dtype(dtype) != np.float32:
        raise UnsupportedPrimitiveError(f"erf of {np.dtype(dtype)} (TensorFlow rule: float32)")
    x = tf.clip_by_value(x, -4.0, 4.0)
    x2 = x * x
    p, q = _ERF_NUMERATOR[0], _ERF_DENOMINATOR[0]
    for a in _ERF_NUMERATOR[1:]:
        p = p * x2 + a
    for b in _ERF_DENOMINATOR[1:]:
        q = q * x2 + b
    return x * p / q


@_rule("erf")
def _erf_rule(g, ins, in_avals, out_avals, params):
    return [_erf(ins[0], in_avals[0].dtype)]


@_rule("erfc")
def _erfc(g, ins, in_avals, out_avals, params):
    return [np.float32(1) - _erf(ins[0], in_avals[0].dtype)]


@_rule("integer_pow")
def _integer_pow(g, ins, in_avals, out_avals, params):
    y = int(params["y"])
    if y == 2:
        return [ins[0] * ins[0]]
    return [tf.pow(ins[0], np.asarray(y, in_avals[0].dtype))]


@_rule("select_n")
def _select_n(g, ins, in_avals, out_avals, params):
    if len(ins) != 3:
        raise UnsupportedPrimitiveError(f"select_n with {len(ins) - 1} cases (TensorFlow rule: 2)")
    which = ins[0] if in_avals[0].dtype == np.bool_ else tf.cast(ins[0], tf.bool)
    return [tf.where(which, ins[2], ins[1])]


@_rule("clamp")
def _clamp(g, ins, in_avals, out_avals, params):
    low, x, high = ins
    return [tf.maximum(tf.minimum(x, high), low)]


@_rule("convert_element_type")
def _convert(g, ins, in_avals, out_avals, params):
    if np.dtype(in_avals[0].dtype) == np.dtype(out_avals[0].dtype):
        return [tf.identity(ins[0])]
    return [tf.cast(ins[0], tf.as_dtype(np.dtype(out_avals[0].dtype)))]


@_rule("broadcast_in_dim")
def _broadcast_in_dim(g, ins, in_avals, out_avals, params):
    shape, dims = tuple(params["shape"]), tuple(params["broadcast_dimensions"])
    x, in_shape = ins[0], tuple(in_avals[0].shape)
    for axis in (i for i in range(len(shape)) if i not in dims):
        x = tf.expand_dims(x, axis)
    full = [1] * len(shape)
    for src, dst in enumerate(dims):
        full[dst] = in_shape[src]
    if all(not is_symbolic(a) and not is_symbolic(b) and a == b for a, b in zip(full, shape,
                                                                               strict=True)):
        return [tf.identity(x)]
    return [tf.broadcast_to(x, g.shape(shape))]


@_rule("reshape")
def _reshape(g, ins, in_avals, out_avals, params):
    if params.get("dimensions") is not None:
        raise UnsupportedPrimitiveError("reshape with dimensions")
    return [tf.reshape(ins[0], g.shape(tuple(params["new_sizes"])))]


@_rule("squeeze")
def _squeeze(g, ins, in_avals, out_avals, params):
    return [tf.squeeze(ins[0], [int(d) for d in params["dimensions"]])]


@_rule("transpose")
def _transpose(g, ins, in_avals, out_avals, params):
    return [tf.transpose(ins[0], [int(p) for p in params["permutation"]])]


@_rule("concatenate")
def _concatenate(g, ins, in_avals, out_avals, params):
    return [tf.concat(ins, int(params["dimension"]))]


@_rule("split")
def _split(g, ins, in_avals, out_avals, params):
    sizes = tuple(params["sizes"])
    return list(tf.split(ins[0], g.shape(sizes), axis=int(params["axis"]), num=len(sizes)))


@_rule("pad")
def _pad(g, ins, in_avals, out_avals, params):
    config = params["padding_config"]
    if any(interior != 0 for _, _, interior in config):
        raise UnsupportedPrimitiveError("pad with interior padding")
    if any(not is_symbolic(v) and v < 0 for lo, hi, _ in config for v in (lo, hi)):
        raise UnsupportedPrimitiveError("pad with negative padding")
    pads = tf.reshape(g.shape([v for lo, hi, _ in config for v in (lo, hi)]), (-1, 2))
    return [tf.pad(ins[0], pads, constant_values=ins[1])]


@_rule("slice")
def _slice(g, ins, in_avals, out_avals, params):
    starts, limits = tuple(params["start_indices"]), tuple(params["limit_indices"])
    strides = params["strides"] or (1,) * len(starts)
    in_shape = tuple(in_avals[0].shape)
    if all(same(s, 0) and t == 1 and same(lim, n) for s, lim, t, n in zip(starts, limits, strides,
                                                                            in_shape, strict=True)):
        return [tf.identity(ins[0])]
    return [tf.strided_slice(ins[0], g.shape(starts), g.shape(limits),
                             np.array([int(t) for t in strides], np.int32))]


def _reduce(fn: Callable[..., Any]) -> Callable[..., list[Any]]:
    def rule(g, ins, in_avals, out_avals, params):
        return [fn(ins[0], axis=[int(a) for a in params["axes"]])]
    return rule


RULES["reduce_sum"] = _reduce(tf.reduce_sum)
RULES["reduce_max"] = _reduce(tf.reduce_max)
RULES["reduce_min"] = _reduce(tf.reduce_min)


def _reduce_window(kind: str) -> Callable[..., list[Any]]:
    """NHWC windows over H and W: explicit padding (-inf / 0) then a VALID max / average pool
    (times the window's size for a sum)."""
    def rule(g, ins, in_avals, out_avals, params):
        window, strides = tuple(params["window_dimensions"]), tuple(params["window_strides"])
        padding = tuple(params["padding"])
        if (len(window) != 4 or window[0] != 1 or window[3] != 1 or strides[0] != 1
                or strides[3] != 1 or any(d != 1 for d in params["base_dilation"])
                or any(d != 1 for d in params["window_dilation"])
                or padding[0] != (0, 0) or padding[3] != (0, 0)):
            raise UnsupportedPrimitiveError(f"reduce_window_{kind} other than over NHWC's H and W")
        x = ins[0]
        if any(p != (0, 0) for p in padding):
            fill = -np.inf if kind == "max" else 0.0
            x = tf.pad(x, [list(p) for p in padding], constant_values=fill)
        ksize, stride = list(window[1:3]), list(strides[1:3])
        if kind == "max":
            return [tf.nn.max_pool2d(x, ksize, stride, "VALID")]
        mean = tf.nn.avg_pool2d(x, ksize, stride, "VALID")
        return [mean * np.asarray(window[1] * window[2], in_avals[0].dtype)]
    return rule


RULES["reduce_window_max"] = _reduce_window("max")
RULES["reduce_window_sum"] = _reduce_window("sum")


@_rule("conv_general_dilated")
def _conv(g, ins, in_avals, out_avals, params):
    """A 2-D convolution in TensorFlow's NHWC / HWIO (transposed there and back if JAX's layout
    differs); groups of one channel are a depthwise convolution."""
    lhs_spec, rhs_spec, out_spec = (tuple(int(i) for i in s) for s in params["dimension_numbers"])
    if (len(lhs_spec) != 4 or any(d != 1 for d in params["lhs_dilation"])
            or params["batch_group_count"] != 1):
        raise UnsupportedPrimitiveError("conv_general_dilated other than 2-D, no lhs dilation")
    nhwc = (lhs_spec[0], *lhs_spec[2:], lhs_spec[1])
    x = ins[0] if nhwc == (0, 1, 2, 3) else tf.transpose(ins[0], nhwc)
    hwio = (*rhs_spec[2:], rhs_spec[1], rhs_spec[0])
    kernel = g.known(ins[1])
    kernel = np.transpose(kernel, hwio) if kernel is not None else tf.transpose(ins[1], hwio)
    pads = [[0, 0], *[[int(lo), int(hi)] for lo, hi in params["padding"]], [0, 0]]
    strides = [int(s) for s in params["window_strides"]]
    dilations = [int(d) for d in params["rhs_dilation"]]
    groups, cin = int(params["feature_group_count"]), int(in_avals[0].shape[lhs_spec[1]])
    if groups == 1:
        y = tf.nn.conv2d(x, kernel, [1, *strides, 1], pads, dilations=[1, *dilations, 1])
    elif groups == cin and kernel.shape[2] == 1:  # HW1(C*m) -> HWC m
        kernel = tf.reshape(kernel, (kernel.shape[0], kernel.shape[1], cin, -1))
        if any(p != [0, 0] for p in pads):
            x = tf.pad(x, pads)
        y = tf.nn.depthwise_conv2d(x, kernel, [1, *strides, 1], "VALID", dilations=dilations)
    else:
        raise UnsupportedPrimitiveError(f"conv_general_dilated with {groups} groups of "
                                        f"{cin // groups} channels")
    inverse = tuple(int(i) for i in np.argsort((out_spec[0], *out_spec[2:], out_spec[1])))
    return [y if inverse == (0, 1, 2, 3) else tf.transpose(y, inverse)]


@_rule("dot_general")
def _dot_general(g, ins, in_avals, out_avals, params):
    equation = einsum_equation(params, len(in_avals[0].shape), len(in_avals[1].shape))
    y = tf.linalg.matmul(*ins) if equation is None else tf.einsum(equation, *ins)
    if np.dtype(out_avals[0].dtype) != np.dtype(in_avals[0].dtype):
        y = tf.cast(y, tf.as_dtype(np.dtype(out_avals[0].dtype)))
    return [y]


@_rule("iota")
def _iota(g, ins, in_avals, out_avals, params):
    shape, dimension = tuple(params["shape"]), int(params["dimension"])
    dtype = tf.as_dtype(np.dtype(params["dtype"]))
    y = tf.range(tf.cast(g.dim(shape[dimension]), dtype), dtype=dtype)
    if len(shape) == 1:
        return [y]
    full = [1] * len(shape)
    full[dimension] = -1
    return [tf.broadcast_to(tf.reshape(y, full), g.shape(shape))]


@_rule("dim_as_value")
def _dim_as_value(g, ins, in_avals, out_avals, params):
    return [tf.cast(g.dim(params["dim"]), tf.as_dtype(np.dtype(out_avals[0].dtype)))]


@_rule("gather")
def _gather(g, ins, in_avals, out_avals, params):
    """A slice at start indices (tf.slice), or `jnp.take` along an axis (tf.gather)."""
    form, detail = gather_form(in_avals, params)
    if form == "take":
        return [tf.gather(ins[0], tf.squeeze(ins[1], 1), axis=detail)]
    axes, sizes = detail
    shape = tuple(in_avals[0].shape)
    known = g.known(ins[1])
    if known is not None:
        first = dict(zip(axes, slice_starts(known, shape, axes, sizes), strict=True))
        begin = np.array([first.get(a, 0) for a in range(len(shape))], np.int32)
    else:
        starts = tf.cast(ins[1], tf.int32)
        begin = tf.stack([starts[axes.index(a)] if a in axes else np.int32(0)
                          for a in range(len(shape))])
    full = dict(zip(axes, sizes, strict=True))
    return [tf.slice(ins[0], begin, g.shape([full.get(a, shape[a]) for a in range(len(shape))]))]


def to_tf_function(fn: Callable[[jax.Array], jax.Array], spec: jax.ShapeDtypeStruct,
                   name: str = "model") -> Any:
    """The tf.function of `fn` (one array in, one out) traced at `spec`, its input signature
    holding None for each symbolic dimension of `spec`."""
    closed = jax.make_jaxpr(fn)(spec)
    signature = tf.TensorSpec([None if is_symbolic(d) else int(d) for d in spec.shape],
                              tf.as_dtype(np.dtype(spec.dtype)), name="input")

    def run(x: tf.Tensor) -> tf.Tensor:
        g = _TFGraph()
        shape = tf.shape(x, out_type=tf.int32)
        g.bind_input_sizes(spec, lambda i: shape[i])
        (out,) = walk(g, closed.jaxpr, closed.consts, [x])
        return tf.identity(out, name="output")

    run.__name__ = name
    return tf.function(run, input_signature=[signature], autograph=False)
