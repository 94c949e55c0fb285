"""One description per semiring: the class carries its name, fields and path properties, the
registry parses names, and the command line, the renderers, the data-set runner and atomic
blocks read only that. A semiring defined here, in this file and nowhere else, works in
``semiring_grad`` (against brute-force path enumeration), in ``jaxpr-semiring flows`` (table,
JSON, HTML), in a data-set run, and inside an atomic block."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brute_force as bf
import family_checkpoints as fc
import jaxpr_semiring as js
from jaxpr_semiring.cli import commands, render
from jaxpr_semiring.semirings import registry


class AbsReal(js.Real):
    """Σ over paths of |product|: the real semiring on |weights| (a user's own semiring)."""

    name = "AbsReal"
    cli_name = "abs-real"

    def scale(self, w, v):
        return super().scale(jnp.abs(w), v)

    def dot_general(self, v, w, dimension_numbers, precision=None):
        return super().dot_general(v, jnp.abs(w), dimension_numbers, precision)

    def linear_vjp(self, fn, primals, ct):
        return None  # not the real field's ⊗: build cotangents from scale/dot_general


def _instances():
    out = []
    for cls in dict.fromkeys(registry.REGISTRY.values()):
        out.append(cls.from_cli(cls.cli_arg and "2"))
    return out


@pytest.mark.parametrize("S", _instances(), ids=lambda S: S.label)
def test_description_agrees_with_the_semiring(S):
    one = S.ones((3,), jnp.float32)
    lift = lambda w: S.scale(jnp.full((3,), w, jnp.float32), one)
    same = lambda a, b: all(
        np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )
    assert S.zero_weight_is_edge == (not same(lift(0.0), S.zeros((3,), jnp.float32)))
    assert S.ignores_weights == (same(lift(2.0), one) and same(lift(-0.5), one))
    assert list(S.field_values(one)) == list(S.fields)
    assert {S.default_field, S.flow_field} <= set(S.fields) and set(S.log_fields) <= set(S.fields)
    assert S.combine in ("sum", "logsumexp", "max")
    assert registry.parse(S.label) == S and registry.parse(repr(S)) == S
    assert render.describe_fields(S.label) == list(S.fields)


def test_parse_spellings_and_errors():
    assert (
        registry.parse("top-k:3")
        == registry.parse("TopK(3)")
        == registry.parse("topk3")
        == js.TopK(3)
    )
    assert registry.parse(" Max_Product ") == js.MaxProduct()
    with pytest.raises(ValueError, match="unknown semiring 'nope': use one of .*top-k:K.*abs-real"):
        registry.parse("nope")
    with pytest.raises(ValueError, match="takes no argument"):
        registry.parse("real:3")
    with pytest.raises(ValueError, match="K >= 1"):
        registry.parse("top-k:0")


def test_entry_point_semirings_load_on_demand(monkeypatch):
    """An installed package registers a semiring through the entry-point group."""

    class EP:
        def load(self):
            class Plugged(js.Real):
                cli_name = "plugged-real"

            return Plugged

    monkeypatch.setattr(
        registry.metadata,
        "entry_points",
        lambda group: [EP()] if group == registry.ENTRY_POINTS else [],
    )
    monkeypatch.setattr(registry, "_entry_points_loaded", [False])
    assert type(registry.parse("plugged-real")).__name__ == "Plugged"


def _mlp(x, W1, W2):
    return jnp.sum(W2 @ jnp.tanh(W1 @ x))


def test_user_semiring_equals_path_enumeration():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x, W1, W2 = (
        jax.random.normal(k1, (3,)),
        jax.random.normal(k2, (4, 3)),
        jax.random.normal(k3, (2, 4)),
    )
    got = jax.jit(js.semiring_grad(_mlp, AbsReal()))(x, W1, W2)
    products = bf.path_products(_mlp, x, W1, W2)
    want = np.array([sum(abs(p) for p in lst) for lst in products])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert not np.allclose(got, np.abs(jax.grad(_mlp)(x, W1, W2)))  # signs cancel in Real


def test_user_semiring_inside_an_atomic_block():
    """Atomic blocks read ``zero_weight_is_edge`` from the description: |J| entries."""
    W = jnp.array([[1.0, -2.0], [0.5, 3.0]])
    f = lambda x: jnp.sum(js.atomic(lambda y: jnp.tanh(W @ y))(x))
    x = jnp.array([0.1, -0.2])
    J = jax.jacobian(lambda y: jnp.tanh(W @ y))(x)
    np.testing.assert_allclose(js.semiring_grad(f, AbsReal())(x), np.abs(J).sum(0), rtol=1e-5)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return fc.build("bert", str(tmp_path_factory.mktemp("ckpt") / "bert"))


TEXT = "the keys to the cabinet [MASK] on the table ."


def test_user_semiring_in_the_command_line(bert, tmp_path, capsys):
    out = {
        k: tmp_path / f"{k}.{e}" for k, e in (("abs", "json"), ("real", "json"), ("html", "html"))
    }
    assert (
        commands.main(
            [
                "flows",
                bert,
                "--text",
                TEXT,
                "--target",
                "logit-diff:is,are",
                "--semiring",
                "abs-real",
                "--json",
                str(out["abs"]),
                "--html",
                str(out["html"]),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "largest flow (value, Σ over tokens)" in table
    assert (
        commands.main(
            [
                "flows",
                bert,
                "--text",
                TEXT,
                "--target",
                "logit-diff:is,are",
                "--semiring",
                "real",
                "--json",
                str(out["real"]),
            ]
        )
        == 0
    )
    a, r = (render.from_json(out[k].read_text()) for k in ("abs", "real"))
    assert a["semiring"] == "abs-real" and list(a["points"][0]["flows"]) == ["value"]
    fa, fr = (np.concatenate([np.ravel(p["flows"]["value"]) for p in d["points"]]) for d in (a, r))
    # Σ|products| ≥ |Σ products| on every component, and strictly somewhere
    assert np.all(fa >= np.abs(fr) - 1e-5 * np.abs(fa).max()) and np.any(fa > np.abs(fr) * 1.01)
    assert "abs-real" in out["html"].read_text()


def test_user_semiring_in_a_data_set_run(bert, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text(TEXT + "\n" + "the key to the cabinet [MASK] on the table .\n")
    single = tmp_path / "single.json"
    assert (
        commands.main(
            [
                "flows",
                bert,
                "--text",
                TEXT,
                "--target",
                "logit-diff:is,are",
                "--semiring",
                "abs-real",
                "--json",
                str(single),
            ]
        )
        == 0
    )
    assert (
        commands.main(
            [
                "flows",
                bert,
                "--file",
                str(src),
                "--out-dir",
                str(tmp_path / "out"),
                "--target",
                "logit-diff:is,are",
                "--semiring",
                "abs-real,max-product",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    recs = [
        json.loads(line) for line in (tmp_path / "out" / "flows.jsonl").read_text().splitlines()
    ]
    assert [(r["index"], r["semiring"]) for r in recs] == [
        (0, "abs-real"),
        (0, "max-product"),
        (1, "abs-real"),
        (1, "max-product"),
    ]
    want = render.from_json(single.read_text())
    flat = lambda d: np.concatenate([np.ravel(p["flows"]["value"]) for p in d["points"]])
    np.testing.assert_allclose(
        flat(render.from_json(json.dumps(recs[0]))), flat(want), rtol=1e-4, atol=1e-6
    )
