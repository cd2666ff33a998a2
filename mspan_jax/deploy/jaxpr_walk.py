"""Walks a traced JAX function (its jaxpr) equation by equation into another framework's graph:
the part the ONNX writer (`jaxpr_onnx`) and the TensorFlow / TFLite writer (`jaxpr_tf`) share.

An `Emitter` holds a format's rules, one per JAX primitive, and its graph values (handles: ONNX
tensor names, TensorFlow tensors). `walk` feeds each equation's input handles to its rule, inlines
calls (pjit, custom_jvp, ...), and evaluates here the equations whose inputs are all known
constants (the weights' casts, reshapes and transposes), so that they become constants of the
graph. Symbolic sizes (`jax.export.symbolic_shape`) are evaluated in the graph by `Emitter.dim`
from the input's runtime shape, through `SymbolicDim`'s arithmetic.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend import core as jex_core

FOLD_LIMIT = 1 << 24  # elements: larger constant results stay computed in the graph
CALLS = ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
         "custom_vjp_call_jaxpr", "remat", "checkpoint", "custom_lin")


class UnsupportedPrimitiveError(NotImplementedError):
    """The traced function uses a primitive (or a form of one) that has no rule in the format."""


def is_symbolic(d: Any) -> bool:
    return not isinstance(d, int | np.integer)


def has_symbolic(value: Any) -> bool:
    if isinstance(value, tuple | list):
        return any(has_symbolic(v) for v in value)
    return type(value).__name__ == "_DimExpr"


def same(a: Any, b: Any) -> bool:
    """Whether two sizes (ints or symbolic) are known to be equal."""
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - jax's inconclusive comparison of symbolic sizes
        return False


class SymbolicDim:
    """A symbolic size during `_DimExpr._evaluate`: a graph value of the emitter (`handle`) with the
    arithmetic the expressions use (sizes are non-negative: floor division and modulo)."""

    __array_ufunc__ = None  # numpy scalars defer to our reflected operators

    def __init__(self, emitter: Emitter, handle: Any):
        self.emitter, self.handle = emitter, handle

    def _binary(self, op: str, other: Any, reflected: bool = False) -> SymbolicDim:
        b = other.handle if isinstance(other, SymbolicDim) else self.emitter.size(int(other))
        a = self.handle
        return SymbolicDim(self.emitter, self.emitter.dim_op(op, b, a) if reflected
                           else self.emitter.dim_op(op, a, b))

    def __add__(self, o: Any) -> SymbolicDim: return self._binary("add", o)
    def __radd__(self, o: Any) -> SymbolicDim: return self._binary("add", o, True)
    def __sub__(self, o: Any) -> SymbolicDim: return self._binary("sub", o)
    def __rsub__(self, o: Any) -> SymbolicDim: return self._binary("sub", o, True)
    def __mul__(self, o: Any) -> SymbolicDim: return self._binary("mul", o)
    def __rmul__(self, o: Any) -> SymbolicDim: return self._binary("mul", o, True)
    def __floordiv__(self, o: Any) -> SymbolicDim: return self._binary("floordiv", o)
    def __rfloordiv__(self, o: Any) -> SymbolicDim: return self._binary("floordiv", o, True)
    def __mod__(self, o: Any) -> SymbolicDim: return self._binary("mod", o)
    def __rmod__(self, o: Any) -> SymbolicDim: return self._binary("mod", o, True)
    def __divmod__(self, o: Any) -> tuple[SymbolicDim, SymbolicDim]: return self // o, self % o
    def __rdivmod__(self, o: Any) -> tuple[SymbolicDim, SymbolicDim]: return o // self, o % self
    def __neg__(self) -> SymbolicDim: return self._binary("sub", 0, True)


Rule = Callable[[Any, list[Any], list[Any], list[Any], dict[str, Any]], list[Any]]


class Emitter:
    """A format's graph being built. Subclasses set `format_name` and `rules` and define `const`,
    `known`, `size` and `dim_op`."""

    format_name = ""
    rules: dict[str, Rule] = {}

    def __init__(self) -> None:
        self.dims: dict[Any, Any] = {}  # symbolic expression -> its size's handle
        self.env: dict[Any, SymbolicDim] = {}  # dimension variable -> its size in the input's shape

    def const(self, value: np.ndarray, hint: str = "const") -> Any:
        """A constant of the graph."""
        raise NotImplementedError

    def known(self, handle: Any) -> np.ndarray | None:
        """The value of a constant made by `const`; None for a computed handle."""
        raise NotImplementedError

    def size(self, value: int) -> Any:
        """A size as the graph's size values (ONNX: int64 [1]; TensorFlow: an int32 scalar)."""
        raise NotImplementedError

    def dim_op(self, op: str, a: Any, b: Any) -> Any:
        """`a op b` on two size values; op of add, sub, mul, floordiv, mod."""
        raise NotImplementedError

    def dim(self, d: Any) -> Any:
        """The size value of `d` (an int or a symbolic expression of the input's sizes)."""
        if not is_symbolic(d):
            return self.size(int(d))
        if d not in self.dims:
            value = d._evaluate(self.env)  # jax's evaluation of the expression over SymbolicDim
            self.dims[d] = value.handle if isinstance(value, SymbolicDim) else self.dim(int(value))
        return self.dims[d]

    def bind_input_sizes(self, spec: jax.ShapeDtypeStruct, size_of: Callable[[int], Any]) -> None:
        """Binds each symbolic dimension of the input `spec` to `size_of(axis)`, its runtime size."""
        for i, d in enumerate(spec.shape):
            if not is_symbolic(d):
                continue
            var = d._to_var()
            if var is None:
                raise ValueError(f"input dimension {i} is {d}: give a plain dimension variable")
            self.env[var] = SymbolicDim(self, size_of(i))


def _sub_jaxpr(params: dict[str, Any]) -> tuple[Any, list[Any]]:
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        value = params.get(key)
        if isinstance(value, jex_core.ClosedJaxpr):
            return value.jaxpr, list(value.consts)
        if isinstance(value, jex_core.Jaxpr):
            return value, []
    raise UnsupportedPrimitiveError(f"call without a jaxpr (params {sorted(params)})")


def _fold(em: Emitter, eqn: Any, ins: list[Any]) -> list[np.ndarray] | None:
    """The outputs of `eqn` evaluated here when its inputs are known constants and its outputs
    are static and not too large; None otherwise."""
    if eqn.primitive.name in CALLS or eqn.primitive.name == "dim_as_value" or not eqn.outvars:
        return None
    values = [em.known(h) for h in ins]
    if any(v is None for v in values) or has_symbolic(tuple(eqn.params.values())):
        return None
    for v in eqn.outvars:
        shape = getattr(v.aval, "shape", None)
        if shape is None or any(is_symbolic(d) for d in shape) or np.prod(shape) > FOLD_LIMIT:
            return None
    out = eqn.primitive.bind(*values, **eqn.params)
    outs = out if eqn.primitive.multiple_results else [out]
    return [np.asarray(o) for o in outs]


def walk(em: Emitter, jaxpr: Any, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    """The handles of `jaxpr`'s outputs, its equations emitted by `em`'s rules on `args`."""
    env: dict[Any, Any] = {}
    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = em.const(np.asarray(value), "weight")
    for var, handle in zip(jaxpr.invars, args, strict=True):
        env[var] = handle

    def read(atom: Any) -> Any:
        if isinstance(atom, jex_core.Literal):
            return em.const(np.asarray(atom.val, atom.aval.dtype))
        return env[atom]

    for eqn in jaxpr.eqns:
        ins = [read(a) for a in eqn.invars]
        name = eqn.primitive.name
        folded = _fold(em, eqn, ins)
        if folded is not None:
            outs = [em.const(value) for value in folded]
        elif name in CALLS:
            sub, sub_consts = _sub_jaxpr(eqn.params)
            outs = walk(em, sub, sub_consts, ins[len(ins) - len(sub.invars):])
        elif name in em.rules:
            outs = em.rules[name](em, ins, [a.aval for a in eqn.invars],
                                  [v.aval for v in eqn.outvars], dict(eqn.params))
        else:
            raise UnsupportedPrimitiveError(f"no {em.format_name} rule for the JAX primitive {name!r}")
        for var, out in zip(eqn.outvars, outs, strict=True):
            env[var] = out
    return [read(v) for v in jaxpr.outvars]


def rule_table() -> tuple[dict[str, Rule], Callable[..., Callable[[Rule], Rule]]]:
    """A format's empty rule table and its decorator `@rule("prim", ...)`."""
    rules: dict[str, Rule] = {}

    def rule(*names: str) -> Callable[[Rule], Rule]:
        def register(fn: Rule) -> Rule:
            for name in names:
                rules[name] = fn
            return fn
        return register

    return rules, rule


def einsum_equation(params: dict[str, Any], lhs_rank: int, rhs_rank: int) -> str | None:
    """`dot_general`'s einsum equation (batch, lhs free, rhs free: its output order), or None for
    a plain 2-D matmul."""
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    if not lb and not rb and lhs_rank == 2 and rhs_rank == 2 and tuple(lc) == (1,) and tuple(rc) == (0,):
        return None
    letters = iter(string.ascii_letters)
    lhs = [next(letters) for _ in range(lhs_rank)]
    rhs = [next(letters) for _ in range(rhs_rank)]
    for a, b in [*zip(lc, rc, strict=True), *zip(lb, rb, strict=True)]:
        rhs[b] = lhs[a]
    batch = [lhs[a] for a in lb]
    free_l = [lhs[i] for i in range(lhs_rank) if i not in lc and i not in lb]
    free_r = [rhs[i] for i in range(rhs_rank) if i not in rc and i not in rb]
    return f"{''.join(lhs)},{''.join(rhs)}->{''.join(batch + free_l + free_r)}"


def gather_form(in_avals: list[Any], params: dict[str, Any]) -> tuple[str, Any]:
    """The two forms of `gather` the models trace: ("slice", (axes, sizes)), a slice at start
    indices (basic indexing under symbolic shapes), or ("take", axis), `jnp.take(x, indices,
    axis)` with indices (n, 1). Anything else raises UnsupportedPrimitiveError."""
    dn = params["dimension_numbers"]
    rank, idx_shape = len(in_avals[0].shape), tuple(in_avals[1].shape)
    starts = tuple(dn.start_index_map)
    batching = getattr(dn, "operand_batching_dims", ())
    if (not tuple(dn.collapsed_slice_dims) and tuple(dn.offset_dims) == tuple(range(rank))
            and idx_shape == (len(starts),) and not batching):
        return "slice", (starts, [params["slice_sizes"][a] for a in starts])
    if (len(starts) != 1 or tuple(dn.collapsed_slice_dims) != starts or batching
            or len(idx_shape) != 2 or idx_shape[-1] != 1):
        raise UnsupportedPrimitiveError(f"gather with dimension numbers {dn} {in_avals} {params}")
    axis = starts[0]
    if tuple(dn.offset_dims) != tuple(i for i in range(rank) if i != axis):
        raise UnsupportedPrimitiveError(f"gather with offset dims {dn.offset_dims}")
    return "take", axis


def slice_starts(known_starts: np.ndarray, shape: Sequence[Any], axes: Sequence[int],
                 sizes: Sequence[Any]) -> list[int]:
    """Known start indices of a "slice" gather, clamped into range as dynamic_slice does (where
    the sizes are static)."""
    return [int(s) if is_symbolic(shape[a]) or is_symbolic(n) else int(np.clip(s, 0, shape[a] - n))
            for s, a, n in zip(known_starts, axes, sizes, strict=True)]
