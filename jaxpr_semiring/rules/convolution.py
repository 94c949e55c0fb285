"""``conv_general_dilated`` as a semiring contraction.

``out[n, o, s] = Σ_{c, k} lhs[n', c', T(s, k)] · rhs[o, c, k]`` — an lhs element reaches an
output element through exactly one kernel offset (weight: that rhs element), and a kernel
element reaches every output position whose window offset ``k`` reads a real lhs element
(weight: that lhs element). Window offsets that fall on padding or on a hole of the lhs dilation
read no lhs element, so they are **no edge** (not a weight-0 edge): the padding value is a
constant.

* ``Real``: JAX's own transpose rules (``jax.vjp`` of the convolution, i.e.
  ``_conv_general_dilated_transpose_lhs/rhs``): the gradient, fast.
* every other semiring, exactly per DESIGN.md: the convolution is rewritten as *patches* (im2col,
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

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..semirings import Real
from . import register
from .windows import gather_windows, scatter_windows, valid_mask, window_table


def _inverse(perm):
    return tuple(int(i) for i in np.argsort(perm))


def _real_backward(ctx, lhs, rhs, ct, params):
    S = ctx.semiring
    out_dtype = params.get("preferred_element_type") or jnp.result_type(lhs.dtype, rhs.dtype)

    def conv(a, b):
        return lax.conv_general_dilated_p.bind(a, b, **params)

    _, pullback = jax.vjp(conv, lhs, rhs)
    g_lhs, g_rhs = pullback(ct.astype(out_dtype))
    return [g_lhs.astype(S.dtype(lhs.dtype)) if ctx.wanted[0] else None,
            g_rhs.astype(S.dtype(rhs.dtype)) if ctx.wanted[1] else None]


def conv_backward(S, lhs, rhs, ct, wanted, *, window_strides, padding, lhs_dilation,
                  rhs_dilation, dimension_numbers, feature_group_count, batch_group_count,
                  **_):
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
    tables = [window_table(lsp[i], ksp[i], window_strides[i], padding[i], lhs_dilation[i],
                           rhs_dilation[i]) for i in range(nsp)]
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
        ctP = S.map(lambda a: jnp.transpose(a, (0, 2, 1, 4, 5, 3)).reshape(patch_shape)
                    .transpose(_inverse(to_ks)), ctP)
        ct_lhs = scatter_windows(S, ctP, lhs_c.shape, sp_axes, tables)
        cts[0] = S.map(lambda a: jnp.transpose(a, _inverse(lhs_spec)), ct_lhs)
    if wanted[1]:
        mask = valid_mask(tables)  # [S0, K0, S1, K1, ...]
        if mask.all():
            # ⊕_{n,s} lift(P[b,n,g,c,k,s]) ⊗ ct[n,b,g,o',s] → [Bg, G, Oh, Cg, K]
            ct_rhs = S.dot_general(ct6, P, (((0, 4), (1, 5)), ((1, 2), (0, 2))))
        else:
            m = np.transpose(mask, tuple(1 + 2 * i for i in range(nsp)) + tuple(2 * i for i in range(nsp)))
            m = jnp.asarray(m.reshape(K, 1, 1, 1, 1, Sz))
            ctk = S.where(m, S.map(lambda a: jnp.broadcast_to(a[None], (K,) + a.shape), ct6))
            # batch (b, g, k), contract (n, s) → [Bg, G, K, Oh, Cg]
            ct_rhs = S.dot_general(ctk, P, (((1, 5), (1, 5)), ((2, 3, 0), (0, 2, 4))))
            ct_rhs = S.map(lambda a: jnp.transpose(a, (0, 1, 3, 4, 2)), ct_rhs)
        ct_rhs = S.map(lambda a: a.reshape((O, Cg) + tuple(ksp)).transpose(_inverse(rhs_spec)), ct_rhs)
        cts[1] = ct_rhs
    return cts


@register("conv_general_dilated")
def conv_general_dilated(ctx, primals_in, primals_out, cts_out, **params):
    lhs, rhs = primals_in
    ct = cts_out[0]
    if type(ctx.semiring) is Real:
        return _real_backward(ctx, lhs, rhs, ct, params)
    return conv_backward(ctx.semiring, lhs, rhs, ct, ctx.wanted, **params)
