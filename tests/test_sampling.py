"""sample_paths: the empirical distribution of sampled paths equals the brute-force path
distribution |product| / Σ|product| (chi-square at a fixed seed, with a check that the same
test rejects a wrong sampler), products, Monte-Carlo entropy, branch shares, jit/vmap, the
no-path and zero-weight cases, and the equations that cannot be crossed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxpr_semiring as js
from brute_force import enumerate_paths

KEY = jax.random.PRNGKey(0)
RNG = np.random.default_rng(3)
W1 = jnp.asarray(RNG.normal(size=(3, 4)), jnp.float32)
W2 = jnp.asarray(RNG.normal(size=(4, 2)), jnp.float32)


def mlp(x):
    h = jnp.tanh(x @ W1)
    return jnp.sum((h @ W2) ** 2 * jnp.array([1.0, -0.5])) + x[0] * x[1]


def with_block(x):
    h = js.atomic(lambda v: jax.nn.softmax(v) * v)(x @ W1)
    return jnp.sum(jnp.cumsum(h) * jnp.take(h, jnp.array([0, 3, 3, 1])))


def relu_mix(x):  # some paths have product 0 (a dead ReLU): probability 0
    return jnp.sum(jax.nn.relu(x @ W1) @ W2) + jnp.sum(x * x)


X = jnp.asarray(RNG.normal(size=(3,)), jnp.float32)
W3 = [jnp.asarray(RNG.normal(size=(3, 3)), jnp.float32) for _ in range(3)]


def layers(x):  # equations of one signature, other operands: they share one compiled step
    for w in W3:
        x = jnp.tanh(x @ w) + x
    return jnp.sum(x * jnp.array([1.0, -2.0, 0.5]))


W4 = jnp.asarray(RNG.normal(size=(2, 3, 2)), jnp.float32)


def every_row(x):
    """Equations of every kind of Jacobian row the sampler reads (analyses/rows.py):
    dot_general with batch and several contracting dimensions, reshapes, a transpose, slices,
    broadcasts, sums, elementwise operations with rank-0 and size-1-axis operands on the path,
    select_n, and the dense JVP for the rest (concatenate)."""
    a = jnp.reshape(jnp.concatenate([x, x * x]), (2, 3))
    b = jnp.einsum("ij,ijk->ik", a, W4)  # contracting i and j: a dot with two of them
    c = jnp.einsum("bi,bj->bij", a, jnp.tanh(a) * 0.5)  # batch dimension, no contraction
    d = jnp.transpose(c, (2, 0, 1)) - jnp.sum(c, axis=2, keepdims=True).transpose(2, 0, 1)
    e = jnp.where(d > 0, d, 0.3 * d).astype(jnp.float32) * b[None, :, :1]
    e = jax.lax.mul(jax.lax.sub(e, e[:, :, 2:]), jnp.sum(x[1:]))  # size-1 axis, rank 0
    return jnp.sum(e * jnp.arange(1.0, 1.0 + e.size).reshape(e.shape)) + jnp.sum(b**3)


def _groups(products, rel=1e-4):
    """Distinct |path product| values with their total probability (equal products merged)."""
    p = np.asarray(products, np.float64)
    order = np.argsort(p)
    values, probs = [], []
    z = np.sum(np.abs(p))
    for i in order:
        if values and abs(p[i] - values[-1]) <= rel * abs(p[i]):
            probs[-1] += abs(p[i]) / z
        else:
            values.append(p[i])
            probs.append(abs(p[i]) / z)
    return np.asarray(values), np.asarray(probs)


def _chi2_pvalue(counts, probs, n):
    expected = n * probs / probs.sum()
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    return stats.chisquare(obs[keep], exp[keep]).pvalue


@pytest.mark.parametrize(
    "f", [mlp, with_block, relu_mix, layers, every_row], ids=lambda f: f.__name__
)
def test_sampled_paths_follow_the_brute_force_distribution(f):
    at, n = 1, 3000
    brute = [p for p, _ in enumerate_paths(f, X)[at]]
    values, probs = _groups(brute)
    s = jax.jit(js.sample_paths(f, at=at, n=n, key=KEY))(X)
    got = np.asarray(s.products, np.float64)
    assert np.all(np.isfinite(got)) and np.all(got != 0)  # zero products never drawn
    nearest = np.argmin(np.abs(got[:, None] - values[None, :]), axis=1)
    assert np.allclose(got, values[nearest], rtol=1e-4, atol=0)  # every sample is a real path
    counts = np.bincount(nearest, minlength=len(values)).astype(float)
    assert _chi2_pvalue(counts, probs, n) > 1e-3
    # the same test rejects a sampler that is wrong (here: ∝ sqrt|product|, or uniform)
    for wrong in (np.sqrt(probs), (probs > 0).astype(float)):
        assert _chi2_pvalue(counts, wrong / wrong.sum(), n) < 1e-6
    # Log's total equals Σ|product| over the enumerated paths
    np.testing.assert_allclose(float(s.log_z), np.log(np.sum(np.abs(brute))), rtol=1e-5, atol=1e-6)


def test_products_are_the_products_of_the_steps():
    s = js.sample_paths(with_block, at=2, n=50, key=KEY)(X)
    for i, path in enumerate(s.paths):
        np.testing.assert_allclose(path.product, float(s.products[i]), rtol=1e-5)
        np.testing.assert_allclose(
            np.prod([st.weight for st in path.steps]), path.product, rtol=1e-6
        )
        assert path.steps[-1].shape == ()  # ends at the scalar output
    assert "atomic" in {st.primitive for p in s.paths for st in p.steps}


def test_monte_carlo_entropy_converges_to_the_entropy_semiring():
    want = float(js.semiring_grad(mlp, js.Entropy())(X).entropy[0])
    est, err = js.sample_paths(mlp, at=0, n=4000, key=KEY)(X).entropy()
    assert abs(est - want) < 4 * err and err < 0.05


def test_branch_shares_estimate_the_normalized_log_flows():
    def f(x):
        t = js.tap(x, "t")
        return jnp.sum(jnp.tanh(t @ W1)) + jnp.sum(jnp.exp(t)) + 2.0 * t[0]

    _, rep = js.flows(f, js.Log())(X)
    flows = {k: float(np.exp(v[0] - rep["t"].total[0])) for k, v in rep["t"].consumers.items()}
    s = js.sample_paths(f, at=0, n=2000, key=KEY)(X)
    share = s.branch_shares()["[tap:t]"]
    assert share.n == 2000 and set(share.shares) <= set(flows)
    labels = sorted(flows)
    counts = np.array([share.shares.get(k, 0.0) * share.n for k in labels])
    assert _chi2_pvalue(counts, np.array([flows[k] for k in labels]), share.n) > 1e-3


def test_jit_and_vmap():
    f = js.sample_paths(mlp, at=(2,), n=20, key=KEY)
    eager, jitted = f(X), jax.jit(f)(X)
    np.testing.assert_array_equal(eager.ids, jitted.ids)
    np.testing.assert_allclose(eager.products, jitted.products, rtol=1e-6)
    xs = jnp.stack([X, -X])
    batched = jax.jit(jax.vmap(f))(xs)
    assert batched.products.shape == (2, 20)
    for b in range(2):
        one = jax.tree.map(lambda a: a[b], batched)
        assert all(np.isclose(p.product, one.products[i]) for i, p in enumerate(one.paths))
    default = js.sample_paths(mlp, n=5, key=KEY)(X)  # at=None: the largest Log flow
    assert int(default.start) == int(jnp.argmax(js.semiring_grad(mlp, js.Log())(X)))


def test_no_path_and_zero_weight_paths_are_refused_with_a_clear_message():
    f = lambda x: x[0] * 0.0 + jax.lax.stop_gradient(x[1]) + x[2]
    x = jnp.ones(3)
    with pytest.raises(
        ValueError, match=r"input element \(0,\) has no path with a nonzero product"
    ):
        js.sample_paths(f, at=0, n=3, key=KEY)(x)
    with pytest.raises(ValueError, match=r"input element \(1,\) has no path with a nonzero"):
        js.sample_paths(f, at=1, n=3, key=KEY)(x)
    traced = jax.jit(js.sample_paths(f, at=0, n=3, key=KEY))(x)  # cannot raise while traced
    with pytest.raises(ValueError, match="nothing to sample"):
        traced.paths
    assert js.sample_paths(f, at=2, n=3, key=KEY)(x).products.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="n must be a positive"):
        js.sample_paths(f, n=0, key=KEY)


def test_scan_cannot_be_crossed_unless_atomic():
    body = lambda c, u: (jnp.tanh(c * u), None)
    f = lambda x: jax.lax.scan(body, x[0], x[1:])[0]
    with pytest.raises(ValueError, match="cannot cross a 'scan'.*jaxpr_semiring.atomic"):
        js.sample_paths(f, at=0, n=2, key=KEY)(X)
    g = lambda x: js.atomic(f)(x)
    s = js.sample_paths(g, at=0, n=2000, key=KEY)(X)
    assert np.allclose(s.products, jax.grad(f)(X)[0])  # one edge: the total derivative


def test_samples_vmapped_in_groups_equal_one_at_a_time():
    one = js.sample_paths(layers, at=0, n=12, key=KEY)(X)
    grouped = js.sample_paths(layers, at=0, n=12, key=KEY, batch_size=4)(X)
    assert np.array_equal(one.ids, grouped.ids)
    np.testing.assert_allclose(one.products, grouped.products, rtol=1e-6)


def test_every_sparse_jacobian_row_equals_the_dense_jvp_row():
    """The sampler reads each step's Jacobian row by the equation's kind (a dot_general's
    slab, an elementwise operation's one element, a reshape's moved element). Scattered into
    the output, each equals the row of a JVP with a one-hot tangent, for every element of
    every path operand of every equation of ``every_row``."""
    from jaxpr_semiring.analyses import rows
    from jaxpr_semiring.api import backprop
    from jaxpr_semiring.graph import Ref
    from jaxpr_semiring.interpreter import value_of

    b = backprop(every_row, js.Log(), 0, False)(X)
    kinds = set()
    for node in b.graph.nodes:
        slots = [s for s, a in enumerate(node.invars) if isinstance(a, Ref)]
        kind = rows.row_kind(node, slots)
        if kind is rows.dense_row:
            continue
        kinds.add(kind.__name__)
        args = [rows.Stacked([value_of(b.env, a)]) for a in node.invars]
        for s in slots:
            if not jnp.issubdtype(node.invars[s].aval.dtype, jnp.floating):
                continue
            for e in range(int(np.prod(node.invars[s].aval.shape, dtype=int))):
                for here in (True, False):
                    at = (jnp.int32(0), s, jnp.int32(e), jnp.bool_(here))
                    want = rows.dense_row(node, args, *at)
                    got = kind(node, args, *at)
                    for (gw, gi), (ww, _) in zip(got, want):
                        dense = jnp.zeros_like(ww).at[gi].add(gw.astype(ww.dtype))
                        np.testing.assert_array_equal(dense, ww, err_msg=str(node))
    assert kinds == {
        "dot_row",
        "pointwise_row",
        "moved_row",
        "broadcast_row",
        "reduce_sum_row",
        "slice_row",
    }


def test_draw_inverts_in_float32_for_bfloat16_logits():
    """128 equal logits: blocks of 16, block ⌊0.3·8⌋ = 2, element ⌊0.312·16⌋ = 4 → index 36.
    In bfloat16 0.312 rounds to 0.3125 and the draw would give 37."""
    from jaxpr_semiring.analyses.sampling import draw

    u = jnp.array([0.3, 0.312], jnp.float32)
    for dt in (jnp.float32, jnp.bfloat16):
        i, log_total = draw(u, jnp.zeros((128,), dt))
        assert int(i) == 36, dt
        assert float(log_total) == pytest.approx(np.log(128.0), rel=1e-6)
