"""The import direction is part of the design: every module sits in one layer, and imports only
from its own layer or below (lazy imports included):

    cli > paper > dataset > features > models > analyses > atomic_blocks > nnx_scopes
        > flax_hooks > api > interpreter > rules > markers > repeats > graph > semirings > kernels
        > numerics > outputs > _compat

No module imports another module's private name, and there are no cycles. A new module must be
placed in a layer (test_every_module_has_a_layer)."""

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "jaxpr_semiring"
# Lowest first. A layer must not import any module of a higher one (prefix match on dotted names);
# the package itself (its __init__ and __main__) sits above them all.
LAYERS = [
    "jaxpr_semiring." + m
    for m in (
        "_compat",
        "outputs",
        "numerics",
        "kernels",
        "semirings",
        "graph",
        "repeats",
        "markers",
        "rules",
        "interpreter",
        "api",
        "flax_hooks",
        "nnx_scopes",
        "atomic_blocks",
        "analyses",
        "models",
        "features",
        "dataset",
        "paper",
        "cli",
    )
]
TOP = {"jaxpr_semiring", "jaxpr_semiring.__main__"}


def _modules():
    mods = {}
    for p in PKG.rglob("*.py"):
        name = ".".join(("jaxpr_semiring",) + p.relative_to(PKG).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    return mods


def _imports(mods):
    """{module: [(imported module, imported name or None)]}, every import statement anywhere."""
    out = {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                for a in node.names:
                    full = f"{base}.{a.name}"
                    edges.append((full, None) if full in mods else (base, a.name))
            elif isinstance(node, ast.Import):
                edges += [(a.name, None) for a in node.names]
        out[name] = [(m, n) for m, n in edges if m in mods]
    return out


MODS = _modules()
IMPORTS = _imports(MODS)


def _layer(mod):
    for i, prefix in enumerate(LAYERS):
        if mod == prefix or mod.startswith(prefix + "."):
            return i
    return len(LAYERS)  # above the core


def test_every_module_has_a_layer():
    loose = [m for m in MODS if m not in TOP and _layer(m) == len(LAYERS)]
    assert not loose, f"modules in no layer (add them to LAYERS): {loose}"


def test_imports_only_downwards():
    bad = sorted(
        {(m, t) for m, edges in IMPORTS.items() for t, _ in edges if _layer(t) > _layer(m)}
    )
    assert not bad, f"modules importing upwards: {bad}"


def test_checker_sees_an_upward_import():
    """The layer check on a made-up edge: a rule importing an analysis is refused."""
    assert _layer("jaxpr_semiring.analyses.flows") > _layer("jaxpr_semiring.rules.structural")
    assert _layer("jaxpr_semiring.cli.commands") == len(LAYERS) - 1
    assert _layer("jaxpr_semiring") == len(LAYERS)


def test_no_private_cross_module_imports():
    bad = [
        (m, t, n)
        for m, edges in IMPORTS.items()
        for t, n in edges
        if n and n.startswith("_") and not n.startswith("__") and t != m
    ]
    bad += [
        (m, t, None)
        for m, edges in IMPORTS.items()
        for t, _ in edges
        if t.rsplit(".", 1)[-1].startswith("_")
        and not t.endswith("__init__")
        and t.rsplit(".", 1)[-1] != "_compat"
        and t.rsplit(".", 1)[0] != m.rsplit(".", 1)[0]
    ]
    assert not bad, f"private names imported across modules: {bad}"


def test_no_import_cycles():
    graph = {
        m: {t for t, _ in edges if t != m and not m.startswith(t + ".")}
        for m, edges in IMPORTS.items()
    }
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = 1
        for t in graph.get(m, ()):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t) :] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import cycles: {cycles[:3]}"


@pytest.mark.parametrize("mod", ["jaxpr_semiring.interpreter", "jaxpr_semiring.semirings.tropical"])
def test_checker_sees_imports(mod):
    assert IMPORTS[mod], "the checker found no imports: it would pass vacuously"


def test_paper_is_optional():
    """The paper's experiments (optax, tqdm, training loops) are imported by nothing else."""
    users = sorted(
        {
            m
            for m, edges in IMPORTS.items()
            for t, _ in edges
            if t.startswith("jaxpr_semiring.paper") and not m.startswith("jaxpr_semiring.paper")
        }
    )
    assert not users, f"modules importing jaxpr_semiring.paper: {users}"
