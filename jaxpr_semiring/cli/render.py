"""Render a component-flows document: JSON I/O, a plain-text table, a heatmap PNG, an HTML page.

The document is what ``jaxpr-semiring flows --json`` writes, one per text (schema and the ±inf
convention: ``docs/report_format.md``). Numbers are the semiring's value fields per layer ×
branch point × token × component; ``-inf``/``inf`` mean "no path" in the max-type and log-space
semirings and are kept exactly (as the strings ``"-inf"``/``"inf"``/``"nan"`` in JSON).

>>> inf = float("inf")
>>> doc = {"model": "tiny-bert", "architecture": "bert", "semiring": "max-product",
...        "target": "logit-diff:is,are", "target_value": 1.5, "tokens": ["[CLS]", "keys"],
...        "points": [{"layer": 0, "point": "attention", "components": ["skip", "query"],
...                    "flows": {"top_pos": [[-inf, 2.0], [1.0, 3.0]],
...                              "top_neg": [[inf, 0.0], [0.25, -1.0]]},
...                    "total": {"top_pos": [2.0, 3.0], "top_neg": [0.0, -1.0]}}]}
>>> from_json(to_json(doc)) == doc
True
>>> describe_fields("top-k:2")
['log_abs[0]', 'sign[0]', 'log_abs[1]', 'sign[1]']
>>> print(format_table(doc))
model tiny-bert (bert) · semiring max-product · target logit-diff:is,are = 1.5 · field top_pos
<BLANKLINE>
layer 0 · attention
  #  token  skip  query  total
  0  [CLS]  -inf      2      2
  1  keys      1      3      3
  winner per token (top_pos): [CLS]→query, keys→query; most tokens: query (2 of 2)
"""

from __future__ import annotations

import html
import json
import math
import re
from typing import Callable, NamedTuple

import numpy as np

from ..analyses.component_channels import POINTS
from ..outputs import shown, write_output
from ..semirings import registry

__all__ = [
    "describe_fields",
    "default_field",
    "validate",
    "to_json",
    "from_json",
    "save_json",
    "format_table",
    "save_heatmap",
    "save_html",
]


class _Spec(NamedTuple):
    fields: tuple  # the value's fields, in order
    default: str  # what the renderers show unless told otherwise
    flow: str  # the field that measures "how much flows" (summary lines)
    combine: str  # ⊕ of the flow field: "sum", "logsumexp" or "max"
    logs: tuple = ()  # fields that hold logarithms: a linear colour scale is a log scale


def _spec(semiring: str, k: int | None = None) -> _Spec:
    """The field spec of a semiring as documents name it: any spelling the registry parses
    ("max-product", "MaxProduct", "top-k:3", "TopK(3)"); ``k``: the argument when the name
    lacks it ("TopK" with k=3). The semiring's own description
    (:class:`~jaxpr_semiring.semirings.base.Semiring`) is the only source."""
    name = str(semiring)
    S = registry.parse(name if k is None or re.search(r"[:(\d]", name) else f"{name}:{k}")
    return _Spec(tuple(S.fields), S.default_field, S.flow_field, S.combine, tuple(S.log_fields))


def describe_fields(semiring: str, k: int | None = None) -> list[str]:
    """The JSON field names of a semiring's value, in order; top-k fields are ``log_abs[i]``,
    ``sign[i]`` for the i-th best path (i from 0), k from the name or ``k``.

    >>> describe_fields("Entropy"), describe_fields("TopK", k=1)
    (['log_z', 'mean_log_abs', 'entropy'], ['log_abs[0]', 'sign[0]'])
    """
    return list(_spec(semiring, k).fields)


def _doc_spec(doc: dict) -> _Spec:
    fields = list(doc["points"][0]["flows"]) if doc["points"] else []
    k = sum(f.startswith("log_abs[") for f in fields) or None
    try:
        return _spec(doc["semiring"], k)
    except ValueError:  # a semiring no one registered: show its fields as they are
        return _Spec(
            tuple(fields), fields[0] if fields else "value", fields[0] if fields else "value", "max"
        )


def default_field(doc: dict) -> str:
    """The field the renderers show by default: ``top_pos`` (max-product), ``entropy``,
    ``log_abs`` (max-abs), ``log_abs[0]`` (top-k), ``value`` (real, log, counting)."""
    return _doc_spec(doc).default


# ------------------------------------------------------------------------------ schema, JSON


def validate(doc: dict) -> dict:
    """``doc`` if it follows the schema (docs/report_format.md), else a one-line ValueError."""

    def need(cond, what):
        if not cond:
            raise ValueError(f"not a component-flows document: {what} (see docs/report_format.md).")

    def shape(x):
        try:
            return np.shape(x)
        except ValueError:  # ragged
            return None

    need(isinstance(doc, dict), "expected a JSON object")
    for key in ("model", "architecture", "semiring", "target", "target_value", "tokens", "points"):
        need(key in doc, f"missing key {key!r}")
    T = len(doc["tokens"])
    need(all(isinstance(t, str) for t in doc["tokens"]), "'tokens' must be strings")
    fields = None
    for i, pt in enumerate(doc["points"]):
        where = f"points[{i}]"
        for key in ("layer", "point", "components", "flows", "total"):
            need(key in pt, f"{where} has no {key!r}")
        need(pt["point"] in POINTS, f"{where}.point is {pt['point']!r}, not one of {POINTS}")
        need(
            fields is None or list(pt["flows"]) == fields,
            f"{where} has other fields than points[0]",
        )
        fields = list(pt["flows"])
        need(set(pt["total"]) == set(fields), f"{where}.total has other fields than its flows")
        C = len(pt["components"])
        for f in fields:
            need(
                shape(pt["flows"][f]) == (T, C),
                f"{where}.flows[{f!r}] is not [{T} tokens][{C} components]",
            )
            need(shape(pt["total"][f]) == (T,), f"{where}.total[{f!r}] is not [{T} tokens]")
    return doc


def _map_numbers(doc: dict, fn: Callable) -> dict:
    """A copy of ``doc`` with ``fn`` applied to every number of the schema (and nothing else:
    a token spelled "nan" stays a string)."""
    nest = lambda x: [nest(y) for y in x] if isinstance(x, (list, tuple, np.ndarray)) else fn(x)
    out = dict(doc, target_value=fn(doc["target_value"]))
    out["points"] = [
        dict(
            pt,
            layer=int(pt["layer"]),
            components=list(pt["components"]),
            flows={f: nest(v) for f, v in pt["flows"].items()},
            total={f: nest(v) for f, v in pt["total"].items()},
        )
        for pt in doc["points"]
    ]
    out["tokens"] = list(doc["tokens"])
    return out


def _encode(x) -> float | str:
    x = float(x)
    return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))


def _decode(x) -> float:
    if isinstance(x, str) and x not in ("inf", "-inf", "nan"):
        raise ValueError(
            f"not a component-flows document: number {x!r} (only 'inf', '-inf', 'nan' are strings)."
        )
    return float(x)


def to_json(doc: dict, indent: int | None = None) -> str:
    """Strict JSON (no NaN/Infinity literals): every number of the schema as a JSON number,
    non-finite ones as the strings ``"inf"``, ``"-inf"``, ``"nan"``. Exact: floats are written
    with the shortest representation that reads back to the same float64."""
    return json.dumps(
        _map_numbers(validate(doc), _encode), indent=indent, allow_nan=False, ensure_ascii=False
    )


def from_json(text: str) -> dict:
    """The document ``to_json`` wrote, with every number a Python float again."""
    return validate(_map_numbers(validate(json.loads(text)), _decode))


def save_json(doc: dict, path: str) -> None:
    """:func:`to_json` written to ``path`` (``-``: stdout) by the rules of
    :mod:`jaxpr_semiring.outputs`: a regular file atomically, a FIFO or device written through;
    :class:`~jaxpr_semiring.outputs.OutputError` (one line) when it cannot be written."""
    write_output(path, to_json(doc, indent=1).encode("utf-8"))


# ------------------------------------------------------------------------------ numbers


def _fmt(x: float) -> str:
    x = float(x)
    return _encode(x) if not math.isfinite(x) else "0" if x == 0 else f"{x:.4g}"


def _field(doc: dict, field: str | None) -> str:
    field = field or default_field(doc)
    fields = list(doc["points"][0]["flows"]) if doc["points"] else [field]
    if field not in fields:
        raise ValueError(
            f"field {field!r} is not in this document: choose one of {', '.join(fields)}."
        )
    return field


def _summary(doc: dict, pt: dict, tokens: list) -> str:
    """Which component carries the most flow at this point: per token for max-type semirings
    (the winner), over all tokens (their ⊕) for the others."""
    spec = _doc_spec(doc)
    comps = [shown(c) for c in pt["components"]]
    x = np.asarray(pt["flows"][spec.flow], np.float64).reshape(len(tokens), len(comps))
    if spec.combine == "max":
        nan = np.isnan(x).any(1)  # a NaN path: no component wins the token
        alive = x.max(1, initial=-np.inf) > -np.inf
        win = [
            "nan" if bad else comps[int(np.argmax(row))] if a else "none"
            for row, a, bad in zip(x, alive, nan)
        ]
        if not win:
            return f"  winner per token ({spec.flow}): no tokens"
        counts = {c: win.count(c) for c in comps}
        best = max(counts, key=counts.get)
        pairs = ", ".join(f"{_label(t)}→{w}" for t, w in zip(tokens, win))
        most = f"{best} ({counts[best]} of {len(tokens)})" if counts[best] else "none"
        note = f"; NaN at {int(nan.sum())} of {len(tokens)} tokens" if nan.any() else ""
        return f"  winner per token ({spec.flow}): {pairs}; most tokens: {most}{note}"
    if not comps:
        return "  no components"
    if spec.combine == "sum":
        agg = x.sum(0)
    else:  # log Σ exp over tokens, shifted by a finite reference (no -inf - -inf)
        top = x.max(0, initial=-np.inf)
        ref = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore"):
            agg = np.log(np.exp(x - ref).sum(0)) + ref
    key = np.abs(agg) if spec.combine == "sum" else agg
    i = int(np.argmax(np.where(np.isnan(key), -np.inf, key)))
    how = {"sum": "Σ", "logsumexp": "log Σ exp"}[spec.combine]
    bad = [c for c, a in zip(comps, agg) if np.isnan(a)]
    note = f"; NaN: {', '.join(bad)}" if bad else ""
    if len(bad) == len(comps):
        return f"  largest flow ({spec.flow}, {how} over tokens): none{note}"
    return f"  largest flow ({spec.flow}, {how} over tokens): {comps[i]} = {_fmt(agg[i])}{note}"


def _label(token: str, width: int = 32) -> str:
    """A token as one printable line (control characters escaped), at most ``width`` chars."""
    s = shown(token)
    return s if len(s) <= width else s[: width - 1] + "…"


def _header(doc: dict, field: str) -> str:
    """The title line; every string of the document escaped (no terminal control sequences)."""
    return (
        f"model {shown(doc['model'])} ({shown(doc['architecture'])}) · semiring "
        f"{shown(doc['semiring'])} · target {shown(doc['target'])} = "
        f"{_fmt(float(doc['target_value']))} · field {shown(field)}"
    )


def format_table(doc: dict, field: str | None = None) -> str:
    """Plain text: per (layer, point) a table of tokens × (components + total) of ``field``
    (default :func:`default_field`), and a summary line of which component carries most."""
    validate(doc)
    field = _field(doc, field)
    tokens = doc["tokens"]
    lines = [_header(doc, field)]
    for pt in doc["points"]:
        head = ["#", "token"] + [shown(c) for c in pt["components"]] + ["total"]
        rows = [
            [str(i), _label(t)]
            + [_fmt(float(v)) for v in pt["flows"][field][i]]
            + [_fmt(float(pt["total"][field][i]))]
            for i, t in enumerate(tokens)
        ]
        widths = [max(len(r[j]) for r in [head] + rows) for j in range(len(head))]
        align = lambda r: (
            "  "
            + "  ".join(
                c.ljust(w) if j == 1 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))
            ).rstrip()
        )
        lines += ["", f"layer {pt['layer']} · {pt['point']}", align(head)]
        lines += [align(r) for r in rows] + [_summary(doc, pt, tokens)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ colour scale


class _Scale(NamedTuple):
    kind: str  # "linear", "log" (positive values over decades), "diverging", "symlog"
    lo: float
    hi: float
    thresh: float = 0.0  # symlog: linear within ±thresh
    diverging = property(lambda self: self.kind in ("diverging", "symlog"))


def _scale(doc: dict, field: str) -> _Scale:
    """One colour scale for every panel of a field, so that colours compare across panels."""
    vals = [np.asarray(pt["flows"][field], np.float64).ravel() for pt in doc["points"]]
    vals += [np.asarray(pt["total"][field], np.float64).ravel() for pt in doc["points"]]
    v = np.concatenate(vals) if vals else np.zeros(0)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return _Scale("linear", 0.0, 1.0)
    lo, hi = float(v.min()), float(v.max())
    if field in _doc_spec(doc).logs or lo == hi:
        return _Scale("linear", lo, hi if hi > lo else lo + 1.0)
    nz = np.abs(v[v != 0])
    span = float(nz.max() / nz.min()) if nz.size else 1.0
    if lo >= 0:
        return _Scale("log", float(nz.min()), hi) if span > 100 else _Scale("linear", lo, hi)
    if hi <= 0 and span <= 100:
        return _Scale("linear", lo, hi)
    top = max(abs(lo), abs(hi))
    if span <= 1e3:
        return _Scale("diverging", -top, top)
    return _Scale("symlog", -top, top, max(float(nz.min()) * 10, top * 1e-6))


def _position(s: _Scale, x: float) -> float | None:
    """Where ``x`` falls on the scale, in [0, 1]; None for non-finite (no path)."""
    if not math.isfinite(x):
        return None
    if s.kind == "log":
        t = (
            (math.log10(max(x, s.lo)) - math.log10(s.lo)) / max(math.log10(s.hi / s.lo), 1e-12)
            if x > 0
            else 0.0
        )
    elif s.kind == "symlog":
        f = lambda y: math.copysign(math.log10(1 + abs(y) / s.thresh), y)
        t = 0.5 + 0.5 * f(x) / f(s.hi)
    else:
        t = (x - s.lo) / (s.hi - s.lo)
    return min(1.0, max(0.0, t))


# ------------------------------------------------------------------------------ heatmap (PNG)


def _panels(doc: dict, field: str) -> list[tuple[str, str, list, np.ndarray]]:
    """Per point type (in POINTS order) and component (then "total"): (type, component,
    layers, [layers × tokens] values, nan where a layer has no such component)."""
    out = []
    for kind in POINTS:
        pts = sorted((p for p in doc["points"] if p["point"] == kind), key=lambda p: p["layer"])
        for comp in list(dict.fromkeys(c for p in pts for c in p["components"])) + ["total"] * bool(
            pts
        ):
            data = np.full((len(pts), len(doc["tokens"])), np.nan)
            for i, p in enumerate(pts):
                if comp == "total":
                    data[i] = np.asarray(p["total"][field], np.float64)
                elif comp in p["components"]:
                    data[i] = np.asarray(p["flows"][field], np.float64)[
                        :, p["components"].index(comp)
                    ]
            out.append((kind, comp, [p["layer"] for p in pts], data))
    return out


def save_heatmap(doc: dict, path: str, field: str | None = None, dpi: int = 100) -> None:
    """A PNG: per point type rows of panels (one per component, then the total), each layers ×
    tokens, with token strings on the x axis and one shared colour bar. Grey cells: no path
    (±inf/nan). Values spanning several decades get a logarithmic (or symmetric-log) scale;
    log-space fields (log_abs, log_z, …) are shown linearly, which already is a log scale.
    Needs matplotlib (``pip install "jaxpr_semiring[examples]"``)."""
    from matplotlib import colormaps, colors
    from matplotlib.figure import Figure

    validate(doc)
    field = _field(doc, field)
    s = _scale(doc, field)
    norm = (
        colors.LogNorm(s.lo, s.hi)
        if s.kind == "log"
        else colors.SymLogNorm(s.thresh, vmin=s.lo, vmax=s.hi)
        if s.kind == "symlog"
        else colors.Normalize(s.lo, s.hi)
    )
    cmap = colormaps["RdBu_r" if s.diverging else "viridis"].with_extremes(bad="#c8c8c8")
    T = len(doc["tokens"])
    panels = _panels(doc, field)
    panel_w = min(12.0, max(2.4, 0.2 * T + 0.8))
    ncols = max(1, min(max([sum(k == q[0] for q in panels) for k in POINTS]), int(24 // panel_w)))
    # a point type starts a new row; long ones wrap after ncols panels
    places, r, j = [], -1, 0
    for i, (kind, *_) in enumerate(panels):
        j = j + 1 if i and panels[i - 1][0] == kind else 0
        r += j % ncols == 0
        places.append((r, j % ncols))
    nrows = r + 1
    # panel rows in inches: title, layers × 0.28, rotated token labels below (≤ 16 characters)
    title_in, labels_in, top_in, left_in, right_in, gap_in = 0.25, 1.0, 0.45, 0.6, 1.1, 0.4
    row_h = [
        max(1.5, 0.28 * max(len(q[2]) for q, (rr, _) in zip(panels, places) if rr == k) + 1.3)
        for k in range(nrows)
    ] or [1.5]
    W, H = left_in + ncols * panel_w + right_in, top_in + sum(row_h) + 0.1
    # placed by hand: matplotlib's constrained layout took ~0.5 s per figure
    fig = Figure(figsize=(W, H), dpi=dpi)
    fig.suptitle(_header(doc, field) + "   (grey: no path)", fontsize=9, y=1 - 0.15 / H)
    labels = [_label(t, 16).replace("$", r"\$") for t in doc["tokens"]]  # no mathtext
    step = max(1, -(-T // 60))
    image, axes = None, []
    for (kind, comp, layers, data), (r, j) in zip(panels, places):
        data = np.ma.masked_invalid(data)
        if s.kind == "log":  # LogNorm cannot place 0 or negatives: show them at the bottom
            data = np.ma.where(data > 0, data, s.lo)
        h = row_h[r] - title_in - labels_in
        y = H - top_in - sum(row_h[:r]) - title_in - h
        x = left_in + j * panel_w
        ax = fig.add_axes((x / W, y / H, (panel_w - gap_in) / W, h / H))
        axes.append(ax)
        image = ax.imshow(data, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_title(f"{kind} · {comp}", fontsize=8)
        ax.set_yticks(range(len(layers)), [str(x) for x in layers], fontsize=7)
        ax.set_xticks(range(0, T, step), labels[::step], rotation=90, fontsize=7)
        if j == 0:
            ax.set_ylabel("layer", fontsize=8)
    if image is not None:
        bottom = H - top_in - sum(row_h) + labels_in
        cax = fig.add_axes(
            ((W - right_in + 0.25) / W, bottom / H, 0.15 / W, (H - top_in - title_in - bottom) / H)
        )
        fig.colorbar(image, cax=cax, label=field)
    write_output(path, lambda fh: fig.savefig(fh, format="png"))


# ------------------------------------------------------------------------------ HTML

_STOPS = {
    False: [(0.0, (68, 1, 84)), (0.5, (33, 145, 140)), (1.0, (253, 231, 37))],  # viridis
    True: [(0.0, (33, 102, 172)), (0.5, (247, 247, 247)), (1.0, (178, 24, 43))],
}  # blue-white-red


def _colour(t: float | None, diverging: bool) -> tuple[str, str]:
    """(background, text colour) for a scale position; grey for no path."""
    if t is None:
        return "#c8c8c8", "#000"
    (t0, c0), (t1, c1) = _STOPS[diverging][:2] if t <= 0.5 else _STOPS[diverging][1:]
    rgb = [round(x0 + (t - t0) / (t1 - t0) * (x1 - x0)) for x0, x1 in zip(c0, c1)]
    light = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140
    return "#%02x%02x%02x" % tuple(rgb), "#000" if light else "#fff"


_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.4em 0 1.2em}td,th{padding:2px 6px;border:1px solid #ddd;
font-size:13px;text-align:right}th{background:#f3f3f3}td.tok{text-align:left;font-family:monospace}
table.meta td{text-align:left}.row{margin:3px 0;line-height:1.9}.lab{display:inline-block;
width:11em;font-size:12px;color:#555}.t{padding:2px 4px;margin:0 1px;border-radius:3px;
font-family:monospace;white-space:pre}.view{display:none}input{margin-left:1em}
.bar{display:inline-block;width:16em;height:1em;vertical-align:middle;border:1px solid #999}
p.sum{font-size:13px;color:#333;margin-top:-.8em}"""


def save_html(doc: dict, path: str, field: str | None = None) -> None:
    """A self-contained HTML page (no network, no scripts): the model/semiring/target header, the
    tokens coloured by flow per component (radio buttons choose the component, pure CSS), and
    per (layer, point) a table of tokens × components. Token strings are HTML-escaped."""
    validate(doc)
    field = _field(doc, field)
    s = _scale(doc, field)
    div, esc = s.diverging, html.escape
    tokens = doc["tokens"]

    def cell(x: float, tag: str = "td", text: str | None = None, title: str = "") -> str:
        bg, fg = _colour(_position(s, x), div)
        extra = f' class="t" title="{esc(title)}: {_fmt(x)}"' if title else ""
        return (
            f'<{tag}{extra} style="background:{bg};color:{fg}">'
            f"{_fmt(x) if text is None else text}</{tag}>"
        )

    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>Component flows: {esc(doc['model'])}</title><style>{_CSS}",
    ]
    options = list(dict.fromkeys(c for p in doc["points"] for c in p["components"])) + ["total"]
    out.append("".join(f"#o{i}:checked~.views .v{i}{{display:block}}" for i in range(len(options))))
    out += ["</style></head><body>", "<h1>Component flows</h1>", '<table class="meta">']
    meta = [
        ("model", doc["model"]),
        ("architecture", doc["architecture"]),
        ("semiring", doc["semiring"]),
        ("target", doc["target"]),
        ("target value", _fmt(float(doc["target_value"]))),
        ("field", field),
        ("colour scale", f"{s.kind}, {_fmt(s.lo)} … {_fmt(s.hi)}; grey: no path"),
    ]
    out += [f"<tr><th>{k}</th><td>{esc(str(v))}</td></tr>" for k, v in meta]
    ramp = ",".join(_colour(i / 8, div)[0] for i in range(9))
    out += [
        "</table>",
        f'<p>{esc(_fmt(s.lo))} <span class="bar" style="background:linear-gradient'
        f'(to right,{ramp})"></span> {esc(_fmt(s.hi))}</p>',
        "<h2>Tokens coloured by flow</h2>",
    ]
    out += [
        f'<input type="radio" name="c" id="o{i}"{" checked" if i == 0 else ""}>'
        f'<label for="o{i}">{esc(o)}</label>'
        for i, o in enumerate(options)
    ]
    out.append('<div class="views">')
    for i, o in enumerate(options):
        out.append(f'<div class="view v{i}">')
        for p in doc["points"]:
            if o != "total" and o not in p["components"]:
                continue
            vals = (
                p["total"][field]
                if o == "total"
                else [row[p["components"].index(o)] for row in p["flows"][field]]
            )
            spans = "".join(cell(float(v), "span", esc(t), o) for t, v in zip(tokens, vals))
            out.append(
                f'<div class="row"><span class="lab">layer {p["layer"]} · '
                f"{esc(p['point'])}</span>{spans}</div>"
            )
        out.append("</div>")
    out += ["</div>", "<h2>Per-layer component tables</h2>"]
    for p in doc["points"]:
        out.append(f'<h3>layer {p["layer"]} · {esc(p["point"])}</h3><table class="flows">')
        out.append(
            "<tr><th>#</th><th>token</th>"
            + "".join(f"<th>{esc(c)}</th>" for c in p["components"])
            + "<th>total</th></tr>"
        )
        for i, t in enumerate(tokens):
            out.append(
                f'<tr><td>{i}</td><td class="tok">{esc(t)}</td>'
                + "".join(cell(float(v)) for v in p["flows"][field][i])
                + cell(float(p["total"][field][i]))
                + "</tr>"
            )
        out.append(f'</table><p class="sum">{esc(_summary(doc, p, tokens).strip())}</p>')
    out.append("</body></html>")
    write_output(path, "\n".join(out).encode("utf-8"))
