"""Brute-force oracle for semiring gradients: explicit path enumeration.

INDEPENDENT of ``jaxpr_semiring`` (never imports it).  The gradient graph is built
from the jaxpr of ``f`` exactly as ``docs/semantics.md`` ("The graph") defines it:

* nodes are (variable, flat element) pairs; call-like equations (``jit``/``pjit``,
  ``closed_call``, ``core_call``, ``remat``/``checkpoint``, ``custom_jvp_call``,
  ``custom_vjp_call``, ``eval_jaxpr``) are inlined, ``name`` (checkpoint_name) is an alias,
  inside the bodies of JAX's shift-invariant ``custom_jvp`` functions (softmax, logsumexp) the
  stability maximum (``reduce_max``) has no edges, whatever the JAX release wrote there, and a
  ``custom_jvp`` whose body builds floats from integer bits is one equation (its own JVP),
  ``scan`` is unrolled, ``cond`` inlines the taken branch, ``while`` is unrolled;
* for each leaf equation, each floating operand POSITION that is a graph node and each
  floating output, the local Jacobian ``jax.jacfwd`` of that single primitive (w.r.t. that
  operand alone) gives the edges: the weight is the Jacobian at the actual primal point,
  and the structure is "nonzero and not NaN at any of ``N_DRAWS`` random standard-normal draws
  of all float operands (integer/boolean operands held at their actual values)" or
  "nonzero (not NaN) at the actual point".  Separate operand positions give parallel edges
  (``mul x x`` is two edges per element).  Constants and literals are not nodes.
* every path from each differentiated input element to the scalar output is enumerated
  (DFS), recording its product of edge weights (float64) and its number of edges.

**Atomic blocks** (``jaxpr_semiring.atomic``) are recognised from their markers alone:
``name`` equations whose name is ``"jaxpr_semiring.atomic:<uid>:<in|out>:<label>"``. A block is
the run of equations of one jaxpr from the first ``in`` marker of a uid to the last ``out``
marker before that uid's next ``in`` marker (outermost blocks only). It becomes ONE equation:
inputs = variables read inside and defined outside, outputs = variables defined inside and
read after it (or returned); an edge joins input element i and output element k when the
block's own scalar graph (built by this same oracle) has a path i → k, weighted by the total
derivative ``jax.jacfwd`` of the block's equations at the primal point.

A few primitives whose random-draw structure would be incomplete/unstable get a
deterministic structure instead (weights still come from ``jacfwd`` at the actual point):
``reduce_max``/``reduce_min`` (every element of the reduced slice -> its output, like
``reduce_sum``), ``cummax``/``cummin`` (like ``cumsum``), ``reduce_window_max``/``_min``
(like ``reduce_window_sum``), ``max``/``min``/``clamp``/``rem`` (elementwise diagonal with
rank-0 broadcasting, in addition to the draws) and ``sort``/``top_k``/``approx_top_k``
(structure = the permutation at the actual point only).  ``stop_gradient`` has no edges.

Public API
----------
``enumerate_paths(f, *args, argnums=0, max_paths=200_000)``
    pytree like ``args[argnums]`` (tuple of pytrees for tuple argnums) whose leaves are numpy
    object arrays shaped like the leaf; each entry is a list of ``(product, n_edges)``.
``path_products(f, *args, argnums=0, max_paths=200_000)``
    same, entries are lists of float products.
``fold(semiring, products, k=None)``
    ``products``: a list of floats (one element) -> dict of numpy scalars (TopK: arrays (k,));
    or an object array of lists -> dict of arrays shaped like it (TopK: trailing axis k).
``brute_force(f, *args, semiring_name, argnums=0, k=None, max_paths=200_000)``
    pytree like the differentiated args whose leaves are ``fold`` dicts.
``semiring`` / ``semiring_name`` may be a string ('Real', 'MaxProduct', 'MaxAbs', 'Log',
'Entropy', 'Expectation', 'Counting', 'Boolean', 'TopK') or any object whose class has
that name (a ``TopK`` object's ``.k`` is used when ``k`` is not given).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import jax
import jax.numpy as jnp
import jax.extend.core as jex

__all__ = [
    "enumerate_paths",
    "path_products",
    "fold",
    "brute_force",
    "build_graph",
    "SEMIRING_FIELDS",
    "PathLimitExceeded",
]

N_DRAWS = 32
MAX_PATHS = 200_000
MAX_WHILE_ITERS = 100_000


class PathLimitExceeded(RuntimeError):
    pass


# ----------------------------------------------------------------------------- helpers


def _is_float(aval_or_dtype) -> bool:
    dt = getattr(aval_or_dtype, "dtype", aval_or_dtype)
    try:
        return bool(jax.dtypes.issubdtype(dt, jnp.floating))
    except Exception:  # extended dtypes etc.
        return False


def _shape(aval):
    return tuple(getattr(aval, "shape", ()))


def _no_ids(shape):
    return np.full(shape, -1, dtype=np.int64)


_CALL_LIKE = {
    "jit",
    "pjit",
    "closed_call",
    "core_call",
    "remat",
    "remat2",
    "checkpoint",
    "custom_jvp_call",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
    "eval_jaxpr",
}
# custom_jvp bodies (by function name) whose reduce_max is a stability shift: no edges
_SHIFT_BODIES = {"_softmax", "_logsumexp_impl"}
_ALIAS = {"name"}
_NO_EDGES = {"stop_gradient"}
_ELEMENTWISE_KINK = {"max", "min", "clamp", "rem"}
_REDUCE_CHOOSER = {"reduce_max", "reduce_min"}
_CUM_CHOOSER = {"cummax", "cummin"}
_WINDOW_CHOOSER = {"reduce_window_max", "reduce_window_min"}
_ACTUAL_ONLY = {"sort", "top_k", "approx_top_k"}


def _bind_params(eqn):
    """(subfuns, params) for ``primitive.bind(*subfuns, *invals, **params)``.

    Older jax returns a tuple from ``get_bind_params``; jax 0.10 returns the params dict.
    """
    bp = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(bp, tuple):
        subfuns, bp = bp
        return tuple(subfuns), dict(bp)
    return (), dict(bp)


def _sub_jaxpr(eqn):
    """(open Jaxpr, consts) of a call-like equation."""
    p = eqn.params
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if key in p:
            j = p[key]
            if isinstance(j, jex.ClosedJaxpr):
                return j.jaxpr, list(j.consts)
            if isinstance(j, jex.Jaxpr):
                return j, []
    raise NotImplementedError(f"brute_force: cannot find the body of {eqn.primitive.name}")


class _Graph:
    def __init__(self, rng):
        self.n = 0
        self.edges: dict[int, list[tuple[int, float]]] = {}
        self.rng = rng

    def new_ids(self, shape):
        size = int(np.prod(shape, dtype=np.int64))
        ids = np.arange(self.n, self.n + size, dtype=np.int64).reshape(shape)
        self.n += size
        return ids

    def add_edge(self, src, dst, w):
        self.edges.setdefault(int(src), []).append((int(dst), float(w)))


# -------------------------------------------------------------- local Jacobians / edges


def _elementwise_mask(in_shape, out_shape):
    n_in = int(np.prod(in_shape, dtype=np.int64))
    n_out = int(np.prod(out_shape, dtype=np.int64))
    if len(in_shape) == 0:
        return np.ones((n_out, n_in), bool)
    if tuple(in_shape) == tuple(out_shape):
        return np.eye(n_out, dtype=bool)
    # general broadcasting (size-1 dims)
    idx = np.broadcast_to(np.arange(n_in).reshape(in_shape), out_shape).reshape(-1)
    m = np.zeros((n_out, n_in), bool)
    m[np.arange(n_out), idx] = True
    return m


def _reduce_mask(in_shape, axes):
    n_in = int(np.prod(in_shape, dtype=np.int64))
    keep = [d for d in range(len(in_shape)) if d not in set(axes)]
    out_shape = tuple(in_shape[d] for d in keep)
    n_out = int(np.prod(out_shape, dtype=np.int64))
    m = np.zeros((n_out, n_in), bool)
    for i, mi in enumerate(np.ndindex(*in_shape) if in_shape else [()]):
        o = np.ravel_multi_index(tuple(mi[d] for d in keep), out_shape) if out_shape else 0
        m[o, i] = True
    return m


def _cum_mask(shape, axis, reverse):
    n = int(np.prod(shape, dtype=np.int64))
    m = np.zeros((n, n), bool)
    idx = list(np.ndindex(*shape))
    for o, mo in enumerate(idx):
        for i, mi in enumerate(idx):
            if all(mo[d] == mi[d] for d in range(len(shape)) if d != axis):
                if (mi[axis] >= mo[axis]) if reverse else (mi[axis] <= mo[axis]):
                    m[o, i] = True
    return m


def _window_mask(rng, in_shape, params):
    from jax import lax

    x = jnp.asarray(rng.standard_normal((N_DRAWS,) + tuple(in_shape)).astype(np.float32))
    f = lambda v: lax.reduce_window_sum_p.bind(v, **params)
    J = np.asarray(jax.vmap(jax.jacfwd(f))(x))
    n_in = int(np.prod(in_shape, dtype=np.int64))
    J = J.reshape(N_DRAWS, -1, n_in)
    return np.any((J != 0) | np.isnan(J), axis=0)


def _local_edges(graph, eqn, prim, subfuns, bparams, invals, in_ids, out_ids):
    """Add the edges of one leaf equation to ``graph``."""
    name = prim.name
    if name in _NO_EDGES:
        return
    in_avals = [v.aval for v in eqn.invars]
    out_avals = [v.aval for v in eqn.outvars]
    float_in = [p for p, a in enumerate(in_avals) if _is_float(a)]
    node_pos = [p for p in float_in if np.any(in_ids[p] >= 0)]
    float_out = [k for k, a in enumerate(out_avals) if _is_float(a)]
    if not node_pos or not float_out:
        return

    def g(*fvals):
        vals = list(invals)
        for p, v in zip(float_in, fvals):
            vals[p] = v
        out = prim.bind(*subfuns, *vals, **bparams)
        if not prim.multiple_results:
            out = [out]
        return tuple(out[k] for k in float_out)

    argnums = tuple(float_in.index(p) for p in node_pos)
    jf = jax.jacfwd(g, argnums=argnums)
    actual_args = [jnp.asarray(invals[p], dtype=in_avals[p].dtype) for p in float_in]
    J_act = jf(*actual_args)  # [out][arg]

    J_draw = None
    if name not in _ACTUAL_ONLY:
        draws = [
            jnp.asarray(
                graph.rng.standard_normal((N_DRAWS,) + _shape(in_avals[p])).astype(
                    np.dtype(in_avals[p].dtype)
                )
            )
            for p in float_in
        ]
        try:
            J_draw = jax.vmap(jf)(*draws)
        except Exception:  # primitive without a batching rule: loop
            per = [jf(*[d[i] for d in draws]) for i in range(N_DRAWS)]
            J_draw = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *per)

    for oi, k in enumerate(float_out):
        out_shape = _shape(out_avals[k])
        n_out = int(np.prod(out_shape, dtype=np.int64))
        o_ids = np.asarray(out_ids[k]).reshape(-1)
        for ai, p in enumerate(node_pos):
            in_shape = _shape(in_avals[p])
            n_in = int(np.prod(in_shape, dtype=np.int64))
            wa = np.asarray(J_act[oi][ai], dtype=np.float64).reshape(n_out, n_in)
            if name in _ACTUAL_ONLY:
                mask = (wa != 0) | np.isnan(wa)
            else:
                jd = np.asarray(J_draw[oi][ai], dtype=np.float64).reshape(N_DRAWS, n_out, n_in)
                # NaN is not evidence of an edge: jacfwd's one-hot tangents give 0·NaN = NaN
                # off the diagonal wherever an elementwise derivative is NaN (rsqrt, log of a
                # negative draw), which would join unrelated elements
                mask = np.any((jd != 0) & ~np.isnan(jd), axis=0) | ((wa != 0) & ~np.isnan(wa))
                if name in _ELEMENTWISE_KINK:
                    mask |= _elementwise_mask(in_shape, out_shape)
                elif name in _REDUCE_CHOOSER:
                    mask |= _reduce_mask(in_shape, tuple(eqn.params["axes"]))
                elif name in _CUM_CHOOSER:
                    mask |= _cum_mask(in_shape, eqn.params["axis"], eqn.params["reverse"])
                elif name in _WINDOW_CHOOSER:
                    mask |= _window_mask(graph.rng, in_shape, eqn.params)
            i_ids = np.asarray(in_ids[p]).reshape(-1)
            for o, i in zip(*np.nonzero(mask)):
                if i_ids[i] >= 0 and o_ids[o] >= 0:
                    graph.add_edge(i_ids[i], o_ids[o], wa[o, i])


# ------------------------------------------------------------------ atomic blocks

ATOMIC_PREFIX = "jaxpr_semiring.atomic:"


def _atomic_marker(eqn):
    if eqn.primitive.name != "name":
        return None
    n = str(eqn.params.get("name", ""))
    if not n.startswith(ATOMIC_PREFIX):
        return None
    uid, side, _ = n[len(ATOMIC_PREFIX) :].split(":", 2)
    return uid, side


def _atomic_ranges(eqns):
    """{first equation index: last equation index} of the outermost atomic blocks."""
    state, found = {}, []
    for i, eqn in enumerate(eqns):
        m = _atomic_marker(eqn)
        if m is None:
            continue
        uid, side = m
        if side == "in":
            if uid in state and state[uid][2] == "out":
                found.append(state.pop(uid)[:2])
            state.setdefault(uid, [i, i, "in"])
        elif uid in state:
            state[uid][1:] = [i, "out"]
    found += [v[:2] for v in state.values() if v[2] == "out"]
    outer, end = {}, -1
    for a, b in sorted(found, key=lambda r: (r[0], -r[1])):
        if a > end:
            outer[a] = end = b
    return outer


def _debug_info(inputs, outputs):
    from jax._src import api_util  # a Jaxpr built by hand wants one (deprecation warning)

    return api_util.debug_info("atomic block", lambda *a: a, tuple(inputs), {}).with_unknown_names()


def _reach_from(graph, src):
    """Nodes reachable from ``src``, itself included (a block output may be its input)."""
    seen, stack = {int(src)}, [int(src)]
    while stack:
        for dst, _ in graph.edges.get(stack.pop(), ()):
            if dst not in seen:
                seen.add(dst)
                stack.append(dst)
    return seen


def _atomic_block(graph, jaxpr, first, last, read, build):
    """One block as one equation: returns ({outvar: (value, ids)})."""
    eqns = jaxpr.eqns[first : last + 1]
    defined = {v for e in eqns for v in e.outvars if not isinstance(v, jex.DropVar)}
    inputs = list(
        dict.fromkeys(
            v for e in eqns for v in e.invars if not isinstance(v, jex.Literal) and v not in defined
        )
    )
    later = {v for e in jaxpr.eqns[last + 1 :] for v in e.invars if not isinstance(v, jex.Literal)}
    later |= {v for v in jaxpr.outvars if not isinstance(v, jex.Literal)}
    outputs = [v for v in defined if v in later]
    sub = jex.Jaxpr([], inputs, outputs, list(eqns), debug_info=_debug_info(inputs, outputs))
    ins = [read(v) for v in inputs]
    vals, ids = [a for a, _ in ins], [b for _, b in ins]
    out_vals = jax.core.eval_jaxpr(sub, [], *vals)
    out_ids = [
        graph.new_ids(_shape(v.aval)) if build and _is_float(v.aval) else _no_ids(_shape(v.aval))
        for v in outputs
    ]
    if build:
        inner = _Graph(np.random.RandomState(0))
        inner_in = [
            inner.new_ids(_shape(v.aval)) if _is_float(v.aval) else _no_ids(_shape(v.aval))
            for v in inputs
        ]
        # the block's own graph, its equations one by one (nested blocks keep reachability)
        inner_out = [
            np.asarray(b).reshape(-1) for _, b in _run(inner, sub, [], vals, inner_in, atomic=False)
        ]
        live = [p for p, v in enumerate(inputs) if _is_float(v.aval) and np.any(ids[p] >= 0)]
        fouts = [k for k, v in enumerate(outputs) if _is_float(v.aval)]

        def block_fn(*fl):
            args = list(vals)
            for p, x in zip(live, fl):
                args[p] = x
            res = jax.core.eval_jaxpr(sub, [], *args)
            return tuple(res[k] for k in fouts)

        J = (
            jax.jacfwd(block_fn, argnums=tuple(range(len(live))))(*[vals[p] for p in live])
            if live
            else ()
        )
        for oi, k in enumerate(fouts):
            o_ids = np.asarray(out_ids[k]).reshape(-1)
            for ai, p in enumerate(live):
                i_ids = np.asarray(ids[p]).reshape(-1)
                w = np.asarray(J[oi][ai], np.float64).reshape(len(o_ids), len(i_ids))
                for i in range(len(i_ids)):
                    if i_ids[i] < 0:
                        continue
                    reached = _reach_from(inner, np.asarray(inner_in[p]).reshape(-1)[i])
                    for o in range(len(o_ids)):
                        if inner_out[k][o] in reached:
                            graph.add_edge(i_ids[i], o_ids[o], w[o, i])
    return {v: (val, oid) for v, val, oid in zip(outputs, out_vals, out_ids)}


# ----------------------------------------------------------------- the interpreter


def _bit_level_custom_jvp(eqn):
    """A custom_jvp whose body builds floats from integer bits anywhere inside (jax 0.12's
    gamma) is one equation: edges from its own JVP (docs/semantics.md)."""
    if eqn.primitive.name != "custom_jvp_call":
        return False

    def bits(j):
        for e in j.eqns:
            if e.primitive.name == "bitcast_convert_type" and _is_float(e.outvars[0].aval):
                return True
            if e.primitive.name in _CALL_LIKE and bits(_sub_jaxpr(e)[0]):
                return True
        return False

    return bits(_sub_jaxpr(eqn)[0])


def _body_name(eqn):
    j = eqn.params.get("call_jaxpr")
    info = getattr(getattr(j, "jaxpr", j), "debug_info", None)
    return getattr(info, "func_name", None)


def _run(graph, jaxpr, consts, in_vals, in_ids, build=True, atomic=True, shift=False):
    env: dict[Any, tuple[Any, np.ndarray]] = {}

    def read(v):
        if isinstance(v, jex.Literal):
            return v.val, _no_ids(_shape(v.aval))
        return env[v]

    def write(v, val, ids):
        if isinstance(v, jex.DropVar):
            return
        env[v] = (val, ids)

    for v, c in zip(jaxpr.constvars, consts):
        write(v, c, _no_ids(_shape(v.aval)))
    for v, x, ids in zip(jaxpr.invars, in_vals, in_ids):
        write(v, x, ids)

    blocks = _atomic_ranges(jaxpr.eqns) if atomic else {}
    skip_to = -1
    for n_eqn, eqn in enumerate(jaxpr.eqns):
        if n_eqn <= skip_to:
            continue
        if n_eqn in blocks:
            skip_to = blocks[n_eqn]
            for v, (val, ids) in _atomic_block(graph, jaxpr, n_eqn, skip_to, read, build).items():
                write(v, val, ids)
            continue
        ins = [read(v) for v in eqn.invars]
        invals = [a for a, _ in ins]
        inids = [b for _, b in ins]
        name = eqn.primitive.name

        if name in _CALL_LIKE and not _bit_level_custom_jvp(eqn):
            body, bconsts = _sub_jaxpr(eqn)
            inner_shift = shift or (name == "custom_jvp_call" and _body_name(eqn) in _SHIFT_BODIES)
            outs = _run(
                graph,
                body,
                bconsts,
                invals[len(invals) - len(body.invars) :],
                inids[len(inids) - len(body.invars) :],
                build,
                shift=inner_shift,
            )
        elif name in _ALIAS:
            outs = list(ins) if eqn.primitive.multiple_results else [ins[0]]
        elif name == "scan":
            outs = _scan(graph, eqn, invals, inids, build)
        elif name == "cond":
            branches = eqn.params["branches"]
            idx = int(np.asarray(invals[0]))
            idx = min(max(idx, 0), len(branches) - 1)
            br = branches[idx]
            outs = _run(graph, br.jaxpr, list(br.consts), invals[1:], inids[1:], build)
        elif name == "while":
            outs = _while(graph, eqn, invals, inids, build)
        else:
            subfuns, bparams = _bind_params(eqn)
            res = eqn.primitive.bind(*subfuns, *invals, **bparams)
            if not eqn.primitive.multiple_results:
                res = [res]
            out_ids = []
            for v in eqn.outvars:
                if build and _is_float(v.aval):
                    out_ids.append(graph.new_ids(_shape(v.aval)))
                else:
                    out_ids.append(_no_ids(_shape(v.aval)))
            if build and not (shift and name == "reduce_max"):
                _local_edges(graph, eqn, eqn.primitive, subfuns, bparams, invals, inids, out_ids)
            outs = list(zip(res, out_ids))
        for v, (val, ids) in zip(eqn.outvars, outs):
            write(v, val, ids)

    return [read(v) for v in jaxpr.outvars]


def _scan(graph, eqn, invals, inids, build):
    p = eqn.params
    body = p["jaxpr"]
    length = p["length"]
    if "num_consts" in p:
        nc, ncar = p["num_consts"], p["num_carry"]
    else:  # jax >= 0.11.2: flat trees (consts, carry, xs)
        c, k, _ = p["ft_in"].update(list(range(len(body.jaxpr.invars)))).unpack()
        nc, ncar = len(list(c)), len(list(k))
    consts = list(zip(invals[:nc], inids[:nc]))
    carry = list(zip(invals[nc : nc + ncar], inids[nc : nc + ncar]))
    xs = list(zip(invals[nc + ncar :], inids[nc + ncar :]))
    y_avals = [v.aval for v in eqn.outvars[ncar:]]
    ys = [[None] * length for _ in y_avals]
    order = range(length - 1, -1, -1) if p["reverse"] else range(length)
    for t in order:
        step_in = consts + carry + [(x[t], ids[t]) for x, ids in xs]
        outs = _run(
            graph,
            body.jaxpr,
            list(body.consts),
            [a for a, _ in step_in],
            [b for _, b in step_in],
            build,
        )
        carry = outs[:ncar]
        for j, y in enumerate(outs[ncar:]):
            ys[j][t] = y
    y_outs = []
    for j, aval in enumerate(y_avals):
        if length == 0:
            y_outs.append((jnp.zeros(aval.shape, aval.dtype), _no_ids(aval.shape)))
        else:
            y_outs.append(
                (
                    jnp.stack([jnp.asarray(a) for a, _ in ys[j]]),
                    np.stack([np.broadcast_to(b, _shape(aval)[1:]) for _, b in ys[j]]),
                )
            )
    return carry + y_outs


def _while(graph, eqn, invals, inids, build):
    p = eqn.params
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    cj, bj = p["cond_jaxpr"], p["body_jaxpr"]
    cconsts = list(zip(invals[:cn], inids[:cn]))
    bconsts = list(zip(invals[cn : cn + bn], inids[cn : cn + bn]))
    carry = list(zip(invals[cn + bn :], inids[cn + bn :]))
    for _ in range(MAX_WHILE_ITERS):
        ci = cconsts + carry
        ((pred, _),) = _run(
            graph, cj.jaxpr, list(cj.consts), [a for a, _ in ci], [b for _, b in ci], build=False
        )
        if not bool(np.asarray(pred)):
            return carry
        bi = bconsts + carry
        carry = _run(
            graph, bj.jaxpr, list(bj.consts), [a for a, _ in bi], [b for _, b in bi], build
        )
    raise RuntimeError("brute_force: while loop exceeded MAX_WHILE_ITERS")


# ------------------------------------------------------------------ graph + paths


def build_graph(f, *args, seed=0):
    """Return (graph, input_ids, output_id, output_value).

    ``input_ids``: list (one per flat leaf of ``args``) of int arrays of node ids (-1 where a
    leaf is not floating).  ``graph.edges``: {src: [(dst, weight), ...]} (multigraph).
    """
    closed = jax.make_jaxpr(f)(*args)
    jaxpr = closed.jaxpr
    graph = _Graph(np.random.RandomState(seed))
    leaves = jax.tree_util.tree_leaves(args)
    if len(leaves) != len(jaxpr.invars):
        raise ValueError("brute_force: unexpected number of jaxpr inputs")
    in_ids = []
    for v in jaxpr.invars:
        in_ids.append(
            graph.new_ids(_shape(v.aval)) if _is_float(v.aval) else _no_ids(_shape(v.aval))
        )
    outs = _run(graph, jaxpr, list(closed.consts), leaves, in_ids, build=True)
    if len(outs) != 1:
        raise TypeError("brute_force: f must return a single scalar")
    out_val, out_id = outs[0]
    out_aval = jaxpr.outvars[0].aval
    if _shape(out_aval) != () or not _is_float(out_aval):
        raise TypeError(f"brute_force: f must return a float scalar, got {out_aval}")
    return graph, in_ids, int(np.asarray(out_id).reshape(())), out_val


def _count_paths_to(graph, target):
    """Exact path counts (python ints) from every node to ``target``; ids are topological."""
    count = {target: 1}
    for node in range(target - 1, -1, -1):
        c = 0
        for dst, _ in graph.edges.get(node, ()):
            c += count.get(dst, 0)
        if c:
            count[node] = c
    return count


def _paths_from(graph, src, target, count):
    out = []
    if src == target:
        return [(1.0, 0)]
    if src < 0 or target < 0 or src not in count:
        return out
    stack = [(src, 1.0, 0)]
    while stack:
        node, prod, n = stack.pop()
        if node == target:
            out.append((prod, n))
            continue
        for dst, w in graph.edges.get(node, ()):
            if dst in count:
                stack.append((dst, prod * w, n + 1))
    return out


def _normalize_argnums(argnums, nargs):
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)
    for a in nums:
        if not -nargs <= a < nargs:
            raise ValueError(f"argnums {a} out of range for {nargs} args")
    return single, tuple(a % nargs for a in nums)


def enumerate_paths(f, *args, argnums=0, max_paths=MAX_PATHS, seed=0):
    """Pytree like ``args[argnums]``: object arrays of lists of (product, n_edges)."""
    single, nums = _normalize_argnums(argnums, len(args))
    graph, in_ids, out_id, _ = build_graph(f, *args, seed=seed)
    count = _count_paths_to(graph, out_id) if out_id >= 0 else {}

    # offsets of each positional arg's leaves in the flat list
    offsets, off = [], 0
    for a in args:
        offsets.append(off)
        off += len(jax.tree_util.tree_leaves(a))

    total = 0
    results = []
    for a in nums:
        leaves, treedef = jax.tree_util.tree_flatten(args[a])
        out_leaves = []
        for j, leaf in enumerate(leaves):
            ids = in_ids[offsets[a] + j]
            if not _is_float(jnp.asarray(leaf).dtype):
                raise TypeError(
                    f"brute_force: differentiated input has non-float dtype "
                    f"{jnp.asarray(leaf).dtype}"
                )
            flat = np.asarray(ids).reshape(-1)
            n_here = sum(count.get(int(s), 0) for s in flat)
            total += n_here
            if total > max_paths:
                raise PathLimitExceeded(f"brute_force: more than {max_paths} paths")
            obj = np.empty(flat.shape, dtype=object)
            for e, s in enumerate(flat):
                obj[e] = _paths_from(graph, int(s), out_id, count)
            out_leaves.append(obj.reshape(np.shape(ids)))
        results.append(jax.tree_util.tree_unflatten(treedef, out_leaves))
    return results[0] if single else tuple(results)


def _map_obj(fn, obj):
    out = np.empty(obj.shape, dtype=object)
    for idx in np.ndindex(*obj.shape):
        out[idx] = fn(obj[idx])
    return out


def path_products(f, *args, argnums=0, max_paths=MAX_PATHS, seed=0):
    """Pytree like ``args[argnums]``: object arrays of lists of path products (float64)."""
    paths = enumerate_paths(f, *args, argnums=argnums, max_paths=max_paths, seed=seed)
    return jax.tree_util.tree_map(
        lambda obj: _map_obj(lambda lst: [p for p, _ in lst], obj),
        paths,
        is_leaf=lambda x: isinstance(x, np.ndarray),
    )


# ------------------------------------------------------------------------ folding

SEMIRING_FIELDS = {
    "Real": ("value",),
    "MaxProduct": ("top_pos", "top_neg"),
    "MaxAbs": ("log_abs", "sign"),
    "Log": ("value",),
    "Entropy": ("log_z", "mean_log_abs", "entropy"),
    "Expectation": ("z", "t"),
    "Counting": ("value",),
    "Boolean": ("value",),
    "TopK": ("log_abs", "sign"),
}


def _resolve(semiring, k):
    if isinstance(semiring, str):
        name = semiring
    else:
        name = type(semiring).__name__
        if k is None and hasattr(semiring, "k"):
            k = int(semiring.k)
    if name not in SEMIRING_FIELDS:
        raise ValueError(f"unknown semiring {name!r}")
    if name == "TopK" and k is None:
        raise ValueError("TopK needs k")
    return name, k


def _log_abs(p):
    a = abs(p)
    return -math.inf if a == 0 else math.log(a)


def _xlogx(a):
    return 0.0 if a == 0 else a * math.log(a)


def _sign(p):
    return -1.0 if p < 0 else 1.0  # sign(0) counts as +1


def _fold_one(name, ps, k):
    ps = [float(p) for p in ps]
    f64 = np.float64
    if name == "Real":
        return {"value": f64(math.fsum(ps))}
    if name == "MaxProduct":
        if not ps:
            return {"top_pos": f64(-np.inf), "top_neg": f64(np.inf)}
        return {"top_pos": f64(max(ps)), "top_neg": f64(min(ps))}
    if name == "MaxAbs":
        if not ps:
            return {"log_abs": f64(-np.inf), "sign": f64(np.nan)}
        la = [_log_abs(p) for p in ps]
        best = max(la)
        sign = 1.0 if any(l == best and _sign(p) > 0 for l, p in zip(la, ps)) else -1.0
        return {"log_abs": f64(best), "sign": f64(sign)}
    if name == "Log":
        z = math.fsum(abs(p) for p in ps)
        return {"value": f64(-np.inf if z == 0 else math.log(z))}
    if name == "Expectation":
        return {
            "z": f64(math.fsum(abs(p) for p in ps)),
            "t": f64(math.fsum(_xlogx(abs(p)) for p in ps)),
        }
    if name == "Entropy":
        z = math.fsum(abs(p) for p in ps)
        t = math.fsum(_xlogx(abs(p)) for p in ps)
        log_z = -math.inf if z == 0 else math.log(z)
        mean = 0.0 if z == 0 else t / z
        return {"log_z": f64(log_z), "mean_log_abs": f64(mean), "entropy": f64(log_z - mean)}
    if name == "Counting":
        n = len(ps)
        return {"value": f64(-np.inf if n == 0 else math.log(n))}
    if name == "Boolean":
        return {"value": np.bool_(len(ps) > 0)}
    if name == "TopK":
        # best first; among equal log|p|, +1 signs first
        items = sorted(((_log_abs(p), _sign(p)) for p in ps), key=lambda t: (-t[0], -t[1]))[:k]
        la = np.full((k,), -np.inf, dtype=np.float64)
        sg = np.full((k,), np.nan, dtype=np.float64)
        for i, (l, s) in enumerate(items):
            la[i], sg[i] = l, s
        return {"log_abs": la, "sign": sg}
    raise ValueError(name)


def fold(semiring, products, k=None):
    """Fold path products into the semiring's value fields (see docs/semantics.md, "The semirings
    and their values").

    ``products`` is either a list of floats (one node) -> dict of numpy scalars (TopK: (k,)
    arrays), or a numpy object array of such lists -> dict of float64 arrays shaped like it
    (TopK: trailing axis k; Boolean: bool arrays).
    """
    name, k = _resolve(semiring, k)
    if isinstance(products, np.ndarray) and products.dtype == object:
        shape = products.shape
        per = [_fold_one(name, products[idx], k) for idx in np.ndindex(*shape)]
        out = {}
        for field in SEMIRING_FIELDS[name]:
            vals = [d[field] for d in per]
            if name == "TopK":
                out[field] = np.asarray(vals, dtype=np.float64).reshape(shape + (k,))
            elif name == "Boolean":
                out[field] = np.asarray(vals, dtype=bool).reshape(shape)
            else:
                out[field] = np.asarray(vals, dtype=np.float64).reshape(shape)
        return out
    return _fold_one(name, list(products), k)


def brute_force(f, *args, semiring_name, argnums=0, k=None, max_paths=MAX_PATHS, seed=0):
    """Semiring gradient of scalar ``f`` by explicit path enumeration.

    Returns a pytree like ``args[argnums]`` (a tuple of them for tuple ``argnums``) whose
    leaves are dicts ``{field: np.ndarray}`` shaped like the leaf (TopK: trailing axis k).
    """
    prods = path_products(f, *args, argnums=argnums, max_paths=max_paths, seed=seed)
    return jax.tree_util.tree_map(
        lambda obj: fold(semiring_name, obj, k=k),
        prods,
        is_leaf=lambda x: isinstance(x, np.ndarray),
    )
