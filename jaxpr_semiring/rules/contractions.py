"""Contractions: out = Σ_c lhs[..c..]·rhs[..c..]. An lhs element reaches every output element
along its row with the matching rhs element as weight; ⊕ over those is the semiring's
``dot_general`` (BLAS for Real and the log-space semirings, chunked tropical for max-type).
Index bookkeeping follows JAX's ``_dot_general_transpose_lhs/rhs``.

Convolutions are contractions too: ``out[n, o, s] = Σ_{c, k} lhs[n', c', T(s, k)] · rhs[o, c, k]``.
An lhs element reaches an output element through exactly one kernel offset (weight: that rhs
element), and a kernel
element reaches every output position whose window offset ``k`` reads a real lhs element
(weight: that lhs element). Window offsets that fall on padding or on a hole of the lhs dilation
read no lhs element, so they are **no edge** (not a weight-0 edge): the padding value is a
constant.

* a semiring that is the real field (``Semiring.linear_vjp``, i.e. ``Real``): JAX's own
  transpose rules (``jax.vjp`` of the convolution): the gradient, fast.
* every other semiring: the convolution is rewritten as *patches* (im2col,
  the static window tables of :mod:`.windows`, any strides / padding / lhs and rhs dilation)
  followed by a ``dot_general`` with the groups as batch dimensions, and the semiring's own
  ``dot_general`` (BLAS for the log-space semirings, chunked tropical for max-type ones) and
  ``scatter`` do the ⊕:

  - lhs: ``ct_P = ⊕_o lift(rhs) ⊗ ct_out`` (a contraction over output channels), then the
    ⊕-scatter of the patches back into lhs (padding slots dropped);
  - rhs: ``⊕_{n, s} lift(P) ⊗ ct_out`` with the kernel offset as a batch dimension, the output
    cotangent masked to 0̄ where offset ``k`` at position ``s`` reads padding (skipped when no
    slot is padding).

  Memory: the patches (kernel size × output size) and, for rhs with padding, the output
  cotangent once per kernel offset; the tropical contraction is chunked by the semiring.

``feature_group_count`` G splits lhs channels and output channels into G groups
(``o = g·O/G + o'`` reads channels ``g·C/G + c``); ``batch_group_count`` B splits the lhs batch
into B groups (``o = b·O/B + o'`` reads lhs batch ``b·N/B + n``). XLA allows at most one of them
> 1, so both become one leading "group" batch dimension of the contraction.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from . import register, register_rewrite
from .windows import gather_windows, scatter_windows, valid_mask, window_table


def _ranges_like(*xs):
    start = 0
    for x in xs:
        yield tuple(range(start, start + len(x)))
        start += len(x)


def _remaining(n, *removed):
    gone = set(i for r in removed for i in r)
    return [i for i in range(n) if i not in gone]


def _transpose_lhs(S, ct, x, y, dimension_numbers, precision, swap_ans=False):
    (x_contract, y_contract), (x_batch, y_batch) = dimension_numbers
    x_kept = _remaining(x.ndim, x_contract, x_batch)
    y_kept = _remaining(y.ndim, y_contract, y_batch)
    if swap_ans:
        ans_batch, ans_y, _ = _ranges_like(x_batch, y_kept, x_kept)
    else:
        ans_batch, _, ans_y = _ranges_like(x_batch, x_kept, y_kept)
    dims = ((ans_y, tuple(y_kept)), (ans_batch, tuple(y_batch)))
    x_contract_sorted_by_y = list(np.take(x_contract, np.argsort(y_contract)))
    out_axes = tuple(int(i) for i in np.argsort(list(x_batch) + x_kept + x_contract_sorted_by_y))
    v = S.dot_general(ct, y, dims, precision=precision)
    return S.map(lambda a: a.transpose(out_axes), v)


@register("dot_general")
def dot_general(ctx, primals_in, primals_out, cts_out, *, dimension_numbers, precision=None, **_):
    x, y = primals_in
    S, ct = ctx.semiring, cts_out[0]
    (x_contract, y_contract), (x_batch, y_batch) = dimension_numbers
    ct_x = _transpose_lhs(S, ct, x, y, dimension_numbers, precision) if ctx.wanted[0] else None
    ct_y = None
    if ctx.wanted[1]:
        swapped = ((y_contract, x_contract), (y_batch, x_batch))
        ct_y = _transpose_lhs(S, ct, y, x, swapped, precision, swap_ans=True)
    return [ct_x, ct_y]


@register_rewrite
def fold_transposed_operands(nodes, keep=frozenset()):
    """dot_general(transpose(a), ...) → dot_general(a, ...) with permuted dimension numbers.

    The same edges and weights (a transpose only renames elements), but the semiring
    contraction then reads the weight in its stored layout: a tied embedding matrix used as
    ``h @ E.T`` is lifted (|w|, |w| log|w|) and chunked along its contiguous rows instead of
    through a transposing copy (BERT's vocabulary projection: 5× faster on CPU). Folded only
    when the operand's free axes keep their order, so the output layout is unchanged.
    """
    transposes = {n.outvars[0].key: n for n in nodes if n.primitive.name == "transpose"}
    if not transposes:
        return nodes
    return [_fold(n, transposes) if n.primitive.name == "dot_general" else n for n in nodes]


def _fold(node, transposes):
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    invars, dims, folded = list(node.invars), [[lc, lb], [rc, rb]], False
    for i in (0, 1):
        t = transposes.get(getattr(invars[i], "key", None))
        if t is None:
            continue
        perm = t.params["permutation"]
        contract, batch = dims[i]
        free = [perm[d] for d in range(len(perm)) if d not in contract and d not in batch]
        if free != sorted(free):
            continue
        dims[i] = [tuple(perm[d] for d in contract), tuple(perm[d] for d in batch)]
        invars[i], folded = t.invars[0], True
    if not folded:
        return node
    params = dict(
        node.params, dimension_numbers=((dims[0][0], dims[1][0]), (dims[0][1], dims[1][1]))
    )
    return node._replace(invars=tuple(invars), params=params)


# ------------------------------------------------------------------------------ convolutions


def _inverse(perm):
    return tuple(int(i) for i in np.argsort(perm))


def conv_backward(
    S,
    lhs,
    rhs,
    ct,
    wanted,
    *,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    batch_group_count,
    **_,
):
    """Semiring cotangents of (lhs, rhs) of a convolution, via patches (any semiring)."""
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    nsp = len(lhs_spec) - 2
    # canonical layouts: lhs [N, C, L...], rhs [O, I, K...], out [N_out, O, S...]
    lhs_c = jnp.transpose(lhs, lhs_spec)
    rhs_c = jnp.transpose(rhs, rhs_spec)
    ct_c = S.map(lambda a: jnp.transpose(a, out_spec), ct)
    N, C = lhs_c.shape[:2]
    O, Cg = rhs_c.shape[:2]
    lsp, ksp = lhs_c.shape[2:], rhs_c.shape[2:]
    G, Bg = int(feature_group_count), int(batch_group_count)
    H = G * Bg
    Nb, Oh = N // Bg, O // H
    tables = [
        window_table(
            lsp[i], ksp[i], window_strides[i], padding[i], lhs_dilation[i], rhs_dilation[i]
        )
        for i in range(nsp)
    ]
    osp = tuple(T.shape[0] for T in tables)
    K, Sz = int(np.prod(ksp, dtype=np.int64)), int(np.prod(osp, dtype=np.int64))
    sp_axes = tuple(range(2, 2 + nsp))
    # P: [N, C, S0, K0, S1, K1, ...] → [N, C, K0, K1, ..., S0, S1, ...] → [Bg, Nb, G, Cg, K, S]
    k_pos = tuple(3 + 2 * i for i in range(nsp))
    s_pos = tuple(2 + 2 * i for i in range(nsp))
    to_ks = (0, 1) + k_pos + s_pos
    P = gather_windows(lhs_c, sp_axes, tables)
    P = jnp.transpose(P, to_ks).reshape(Bg, Nb, G, Cg, K, Sz)
    ct6 = S.map(lambda a: a.reshape(Nb, Bg, G, Oh, Sz), ct_c)
    cts = [None, None]
    if wanted[0]:
        rhs5 = rhs_c.reshape(Bg, G, Oh, Cg, K)
        # ⊕_o' lift(rhs[b,g,o',c,k]) ⊗ ct[n,b,g,o',s] → [Bg, G, Nb, S, Cg, K]
        ctP = S.dot_general(ct6, rhs5, (((3,), (2,)), ((1, 2), (0, 1))))
        patch_shape = (N, C) + tuple(ksp) + osp
        ctP = S.map(
            lambda a: (
                jnp.transpose(a, (0, 2, 1, 4, 5, 3)).reshape(patch_shape).transpose(_inverse(to_ks))
            ),
            ctP,
        )
        ct_lhs = scatter_windows(S, ctP, lhs_c.shape, sp_axes, tables)
        cts[0] = S.map(lambda a: jnp.transpose(a, _inverse(lhs_spec)), ct_lhs)
    if wanted[1]:
        mask = valid_mask(tables)  # [S0, K0, S1, K1, ...]
        if mask.all():
            # ⊕_{n,s} lift(P[b,n,g,c,k,s]) ⊗ ct[n,b,g,o',s] → [Bg, G, Oh, Cg, K]
            ct_rhs = S.dot_general(ct6, P, (((0, 4), (1, 5)), ((1, 2), (0, 2))))
        else:
            m = np.transpose(
                mask, tuple(1 + 2 * i for i in range(nsp)) + tuple(2 * i for i in range(nsp))
            )
            m = jnp.asarray(m.reshape(K, 1, 1, 1, 1, Sz))
            ctk = S.where(m, S.map(lambda a: jnp.broadcast_to(a[None], (K,) + a.shape), ct6))
            # batch (b, g, k), contract (n, s) → [Bg, G, K, Oh, Cg]
            ct_rhs = S.dot_general(ctk, P, (((1, 5), (1, 5)), ((2, 3, 0), (0, 2, 4))))
            ct_rhs = S.map(lambda a: jnp.transpose(a, (0, 1, 3, 4, 2)), ct_rhs)
        ct_rhs = S.map(
            lambda a: a.reshape((O, Cg) + tuple(ksp)).transpose(_inverse(rhs_spec)), ct_rhs
        )
        cts[1] = ct_rhs
    return cts


@register("conv_general_dilated")
def conv_general_dilated(ctx, primals_in, primals_out, cts_out, **params):
    lhs, rhs = primals_in
    ct = cts_out[0]
    # the real field: JAX's own transpose rules (the gradient, fast)
    fast = ctx.semiring.linear_vjp(
        lambda a, b: lax.conv_general_dilated_p.bind(a, b, **params), (lhs, rhs), ct
    )
    if fast is not None:
        return [g if w else None for g, w in zip(fast, ctx.wanted)]
    return conv_backward(ctx.semiring, lhs, rhs, ct, ctx.wanted, **params)
