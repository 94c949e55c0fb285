"""Compare jaxpr_semiring's values with the brute-force enumerator's (tests/brute_force.py)."""

import jax
import numpy as np

import jaxpr_semiring as js
from brute_force import fold, path_products

SEMIRINGS = [
    js.Real(),
    js.MaxProduct(),
    js.MaxAbs(),
    js.Log(),
    js.Entropy(),
    js.Expectation(),
    js.Counting(),
    js.Boolean(),
]


def fields(S, value):
    """Our value as the enumerator's field dict."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        out = {f: np.asarray(getattr(value, f), np.float64) for f in value._fields}
        if hasattr(value, "entropy") and S.name == "Entropy":
            out["entropy"] = np.asarray(value.entropy, np.float64)
        return out
    return {"value": np.asarray(value)}


def sign_is_ambiguous(products, rel=1e-4):
    """Per element: do paths of opposite signs tie (within float32 noise) for the largest |p|?
    Then MaxAbs's sign depends on rounding order, not on the semantics."""

    def one(ps):
        if not ps:
            return False
        a = np.abs(np.asarray(ps, np.float64))
        near = a >= a.max() * (1 - rel)
        signs = np.sign(np.asarray(ps)[near])
        return bool(np.any(signs > 0) and np.any(signs < 0))

    return np.vectorize(one, otypes=[bool])(products)


def assert_matches(S, got, want, rtol=2e-4, atol=2e-4, where="", ambiguous=None):
    got = fields(S, got)
    if S.name == "MaxAbs":  # the sign of 0̄ (no path) is a convention, not a path's sign
        alive = np.isfinite(want["log_abs"])
        if ambiguous is not None:
            alive = alive & ~ambiguous
        got["sign"], want = (
            np.where(alive, got["sign"], 0),
            dict(want, sign=np.where(alive, want["sign"], 0)),
        )
    for name, w in want.items():
        g = got[name]
        if w.dtype == bool:
            np.testing.assert_array_equal(g, w, err_msg=f"{S.name}.{name} {where}")
        else:
            np.testing.assert_allclose(
                g, w, rtol=rtol, atol=atol, err_msg=f"{S.name}.{name} {where}"
            )


def check_all_semirings(f, *args, argnums=0, semirings=SEMIRINGS, **tol):
    """Every semiring's semiring_grad equals the fold of the explicitly enumerated paths."""
    prods = path_products(f, *args, argnums=argnums)
    for S in semirings:
        got = js.semiring_grad(f, S, argnums=argnums)(*args)
        want = jax.tree.map(
            lambda obj: fold(S.name, obj), prods, is_leaf=lambda x: isinstance(x, np.ndarray)
        )
        got_leaves = jax.tree.leaves(
            got, is_leaf=lambda x: isinstance(x, tuple) and hasattr(x, "_fields")
        )
        want_leaves = jax.tree.leaves(want, is_leaf=lambda x: isinstance(x, dict))
        prod_leaves = jax.tree.leaves(prods, is_leaf=lambda x: isinstance(x, np.ndarray))
        assert len(got_leaves) == len(want_leaves)
        for i, (g, w, p) in enumerate(zip(got_leaves, want_leaves, prod_leaves)):
            assert_matches(
                S, g, w, where=f"(leaf {i} of {f})", ambiguous=sign_is_ambiguous(p), **tol
            )
    return prods
