"""The component-flows renderers (jaxpr_semiring.cli.render) on synthetic documents of every
semiring's field set: exact JSON round trip (±inf, nan), the plain-text table, the heatmap PNG and
the self-contained HTML page (parsed; rendered by headless Chromium where the machine has one)."""

from __future__ import annotations

import html.parser
import json
import math
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest

from jaxpr_semiring.cli import render as report

# tokens that break naive HTML, matplotlib mathtext, or a JSON decoder that guesses numbers
TOKENS = [
    "[CLS]",
    "<b>",
    "a&b",
    '"q"',
    "it's",
    "$x$",
    "nan",
    "-inf",
    "é",
    "<script>alert(1)</script>",
]
INF = float("inf")


def _values(rng, field, shape):
    """Plausible values of one field, with the field's "no path" value sprinkled in."""
    x = rng.standard_normal(shape)
    dead = rng.random(shape) < 0.15
    if field in ("top_pos",):
        return np.where(dead, -INF, x)
    if field == "top_neg":
        return np.where(dead, INF, x)
    if field.startswith("sign"):
        return np.where(x < 0, -1.0, 1.0)
    if field in ("log_z", "log_abs", "value_log") or field.startswith("log_abs["):
        return np.where(dead, -INF, 3 * x)
    if field == "entropy":
        return np.abs(x)
    if field == "z":  # positive, spanning several decades: a logarithmic colour scale
        return 10.0 ** (4 * rng.random(shape) - 2)
    return x * 10.0 ** (3 * rng.random(shape))  # signed, over decades: symmetric-log scale


def make_doc(semiring, seed=0, heads=False, cross=False, layers=2):
    rng = np.random.default_rng(seed)
    fields = report.describe_fields(semiring)
    T = len(TOKENS)
    attn = (
        ["skip"]
        + (
            [f"{c}/h{h}" for c in ("query", "key", "value") for h in range(2)]
            if heads
            else ["query", "key", "value"]
        )
        + ["other"]
    )
    kinds = (
        [("attention", attn)]
        + ([("cross_attention", ["skip", "query", "key", "value", "other"])] if cross else [])
        + [("mlp", ["skip", "mlp", "other"])]
    )
    points = []
    for layer in range(layers):
        for point, comps in kinds:
            flows, total = {}, {}
            for f in fields:
                key = "value_log" if f == "value" and semiring in ("log", "counting") else f
                v = _values(rng, key, (T, len(comps)))
                flows[f] = v.astype(np.float32).astype(np.float64).tolist()  # float32 origin
                total[f] = v.max(1).astype(np.float32).astype(np.float64).tolist()
            points.append(
                dict(layer=layer, point=point, components=comps, flows=flows, total=total)
            )
    return dict(
        model="tiny-bert",
        architecture="bert",
        semiring=semiring,
        target='logit-diff:"is",<are>',
        target_value=1.25,
        tokens=list(TOKENS),
        points=points,
    )


SEMIRINGS = [
    "real",
    "log",
    "counting",
    "max-product",
    "max-abs",
    "entropy",
    "top-k:3",
    "expectation",
]


def _same(a, b):
    """Equality that treats nan as equal to nan (and keeps -0.0 vs 0.0 apart)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


# ------------------------------------------------------------------------------ fields


def test_describe_fields_every_semiring_and_spelling():
    assert report.describe_fields("real") == ["value"]
    assert report.describe_fields("counting") == ["value"]
    assert (
        report.describe_fields("max-product")
        == report.describe_fields("MaxProduct")
        == ["top_pos", "top_neg"]
    )
    assert report.describe_fields("max_abs") == ["log_abs", "sign"]
    assert report.describe_fields("Entropy") == ["log_z", "mean_log_abs", "entropy"]
    assert (
        report.describe_fields("top-k:2")
        == report.describe_fields("TopK(2)")
        == report.describe_fields("topk", k=2)
        == ["log_abs[0]", "sign[0]", "log_abs[1]", "sign[1]"]
    )
    with pytest.raises(ValueError, match="needs k.*top-k:K"):
        report.describe_fields("top-k")
    with pytest.raises(ValueError, match="unknown semiring 'tropical'.*max-product"):
        report.describe_fields("tropical")


@pytest.mark.parametrize(
    "semiring,field",
    [
        ("real", "value"),
        ("log", "value"),
        ("counting", "value"),
        ("max-product", "top_pos"),
        ("MaxAbs", "log_abs"),
        ("entropy", "entropy"),
        ("top-k:3", "log_abs[0]"),
    ],
)
def test_default_field(semiring, field):
    doc = make_doc(semiring)
    assert report.default_field(doc) == field
    # a top-k document named without k: k comes from its fields
    if semiring.startswith("top"):
        assert report.default_field(dict(doc, semiring="TopK")) == "log_abs[0]"


# ------------------------------------------------------------------------------ JSON


@pytest.mark.parametrize("semiring", SEMIRINGS)
def test_json_round_trip_exact(semiring):
    doc = make_doc(semiring, heads=True, cross=True)
    doc["points"][0]["flows"][report.describe_fields(semiring)[0]][0][0] = float("nan")
    doc["points"][0]["total"][report.describe_fields(semiring)[0]][1] = -0.0
    text = report.to_json(doc)
    # strict JSON: no NaN / Infinity literals anywhere
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON literal {c}"))
    back = report.from_json(text)
    assert _same(back, doc)
    assert report.to_json(back) == text
    assert back["tokens"] == TOKENS  # the tokens "nan" and "-inf" stay strings
    assert '"-inf"' in text and '"nan"' in text


def test_json_accepts_numpy_and_float32():
    doc = make_doc("max-product")
    pt = doc["points"][0]
    arr = {f: np.asarray(v, np.float32) for f, v in pt["flows"].items()}
    doc2 = dict(
        doc,
        target_value=np.float32(1.25),
        points=[
            dict(
                pt, flows=arr, total={f: np.asarray(v, np.float32) for f, v in pt["total"].items()}
            )
        ],
    )
    back = report.from_json(report.to_json(doc2))
    np.testing.assert_array_equal(
        np.asarray(back["points"][0]["flows"]["top_pos"], np.float32), arr["top_pos"]
    )
    assert back["target_value"] == 1.25


def test_save_json_atomic(tmp_path):
    doc = make_doc("entropy")
    path = tmp_path / "flows.json"
    report.save_json(doc, str(path))
    assert _same(report.from_json(path.read_text(encoding="utf-8")), doc)
    assert os.listdir(tmp_path) == ["flows.json"]


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.pop("tokens"), "missing key 'tokens'"),
        (lambda d: d["points"][0].update(point="ffn"), "points\\[0\\].point is 'ffn'"),
        (
            lambda d: d["points"][1]["flows"]["value"].pop(),
            "points\\[1\\].flows\\['value'\\] is not \\[10 tokens\\]\\[3 components\\]",
        ),
        (lambda d: d["points"][0]["total"].pop("value"), "points\\[0\\].total has other fields"),
    ],
)
def test_bad_documents_one_line_errors(mutate, message):
    doc = make_doc("real")
    mutate(doc)
    with pytest.raises(ValueError, match=message) as err:
        report.from_json(json.dumps(doc))
    assert "\n" not in str(err.value)


def test_bad_number_string():
    text = report.to_json(make_doc("real")).replace('"target_value": 1.25', '"target_value": "big"')
    with pytest.raises(ValueError, match="number 'big'"):
        report.from_json(text)


# ------------------------------------------------------------------------------ table


@pytest.mark.parametrize("semiring", SEMIRINGS)
def test_table_has_every_token_component_and_point(semiring):
    doc = make_doc(semiring, heads=semiring == "max-product", cross=semiring == "entropy")
    text = report.format_table(doc)
    field = report.default_field(doc)
    assert text.splitlines()[0].endswith(f"field {field}")
    for tok in TOKENS:
        assert tok in text
    for pt in doc["points"]:
        assert f"layer {pt['layer']} · {pt['point']}" in text
        for c in pt["components"]:
            assert c in text
    assert text.count("total") >= len(doc["points"])
    summaries = [
        line for line in text.splitlines() if "winner per token" in line or "largest flow" in line
    ]
    assert len(summaries) == len(doc["points"])
    # every other field renders too; an unknown one is a clear error
    for f in report.describe_fields(semiring):
        assert report.format_table(doc, f).splitlines()[0].endswith(f"field {f}")
    with pytest.raises(ValueError, match="field 'nope' is not in this document: choose one of"):
        report.format_table(doc, "nope")


def _point(comps, flows):
    return dict(
        layer=3,
        point="mlp",
        components=comps,
        flows={"value": flows},
        total={"value": [sum(r) for r in flows]},
    )


def test_summary_picks_the_largest_component():
    doc = dict(make_doc("real", layers=0), tokens=["a", "b"])
    # real: the largest |Σ over tokens|, sign kept
    doc["points"] = [_point(["skip", "mlp", "other"], [[1.0, -2.0, 0.5], [0.5, -2.5, 0.0]])]
    assert "largest flow (value, Σ over tokens): mlp = -4.5" in report.format_table(doc)
    # log: log Σ exp over tokens, -inf (no path) ignored
    doc = dict(doc, semiring="log")
    doc["points"] = [_point(["skip", "mlp"], [[0.0, -INF], [0.0, 0.5]])]
    assert (
        f"largest flow (value, log Σ exp over tokens): skip = {math.log(2):.4g}"
        in report.format_table(doc)
    )
    # max-product: the winner per token; a token with no path at all has none
    doc = dict(doc, semiring="max-product")
    doc["points"][0]["flows"] = {
        "top_pos": [[-INF, -INF], [0.5, 2.0]],
        "top_neg": [[INF, INF], [0.5, 2.0]],
    }
    doc["points"][0]["total"] = {"top_pos": [-INF, 2.0], "top_neg": [INF, 0.5]}
    assert (
        "winner per token (top_pos): a→none, b→mlp; most tokens: mlp (1 of 2)"
        in report.format_table(doc)
    )


def test_summary_nan_is_named_never_a_winner():
    """A NaN flow (jax.grad would give NaN there) is reported as NaN: not 'none', not a winner."""
    NAN = float("nan")
    doc = dict(make_doc("max-product", layers=0), tokens=["a", "b", "c"])
    doc["points"] = [
        dict(
            layer=0,
            point="mlp",
            components=["skip", "mlp"],
            flows={
                "top_pos": [[NAN, 1.0], [-INF, -INF], [0.5, 2.0]],
                "top_neg": [[NAN, 1.0], [INF, INF], [0.5, 2.0]],
            },
            total={"top_pos": [NAN, -INF, 2.0], "top_neg": [NAN, INF, 0.5]},
        )
    ]
    assert (
        "winner per token (top_pos): a→nan, b→none, c→mlp; most tokens: mlp (1 of 3); "
        "NaN at 1 of 3 tokens"
    ) in report.format_table(doc)
    doc["points"][0]["flows"]["top_pos"] = [[NAN, NAN], [NAN, NAN], [NAN, NAN]]
    assert "most tokens: none; NaN at 3 of 3 tokens" in report.format_table(doc)
    # real: a NaN component is named and never the largest
    doc = dict(doc, semiring="real", tokens=["a", "b"])
    doc["points"] = [_point(["skip", "mlp", "other"], [[1.0, NAN, 0.5], [0.5, 2.5, 0.0]])]
    assert "largest flow (value, Σ over tokens): skip = 1.5; NaN: mlp" in report.format_table(doc)
    doc["points"] = [_point(["skip"], [[NAN], [1.0]])]
    assert "largest flow (value, Σ over tokens): none; NaN: skip" in report.format_table(doc)


# ------------------------------------------------------------------------------ heatmap


def _png_size(path):
    data = open(path, "rb").read(24)
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("semiring", SEMIRINGS)
def test_heatmap_png(tmp_path, semiring):
    pytest.importorskip("matplotlib")
    doc = make_doc(semiring, heads=semiring == "top-k:3", cross=semiring == "real", layers=3)
    path = tmp_path / "flows.png"
    report.save_heatmap(doc, str(path))
    w, h = _png_size(path)
    assert 400 <= w <= 6000 and 300 <= h <= 4000, (w, h)
    assert path.stat().st_size > 10_000
    assert os.listdir(tmp_path) == ["flows.png"]  # written atomically, no temporaries left


def test_heatmap_all_no_path_and_bad_field(tmp_path):
    pytest.importorskip("matplotlib")
    doc = make_doc("max-product")
    for pt in doc["points"]:
        pt["flows"]["top_pos"] = [[-INF] * len(pt["components"]) for _ in TOKENS]
        pt["total"]["top_pos"] = [-INF] * len(TOKENS)
    report.save_heatmap(doc, str(tmp_path / "dead.png"))
    assert _png_size(tmp_path / "dead.png")[0] > 400
    with pytest.raises(ValueError, match="field 'entropy' is not in this document"):
        report.save_heatmap(doc, str(tmp_path / "x.png"), field="entropy")
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------------------ HTML


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text, self.tables = [], [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.tables += tag == "table" and ("class", "flows") in attrs

    def handle_data(self, data):
        self.text.append(data)


@pytest.mark.parametrize("semiring", SEMIRINGS)
def test_html_self_contained(tmp_path, semiring):
    doc = make_doc(semiring, heads=semiring == "max-product", cross=semiring == "entropy")
    path = tmp_path / "flows.html"
    report.save_html(doc, str(path))
    source = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(source)
    page.close()
    text = "".join(page.text)
    for tok in TOKENS:
        assert tok in text  # escaped in the source, intact when parsed
    assert page.tables == len(doc["points"])  # one component table per (layer, point)
    for pt in doc["points"]:
        assert f"layer {pt['layer']} · {pt['point']}" in text
    for value in (doc["model"], doc["architecture"], doc["semiring"], doc["target"]):
        assert value in text
    # nothing from the network, nothing executable: the token <script> is text, not a tag
    assert "http://" not in source and "https://" not in source and "url(" not in source
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    assert (
        source.count('type="radio"') == len({c for p in doc["points"] for c in p["components"]}) + 1
    )


@pytest.mark.skipif(
    not (shutil.which("chromium") or os.path.exists("/usr/bin/chromium")),
    reason="Chromium is not installed (/usr/bin/chromium): the page is only parsed, not rendered",
)
def test_html_renders_in_headless_chromium(tmp_path):
    doc = make_doc("max-product", heads=True)
    page, shot = tmp_path / "flows.html", tmp_path / "shot.png"
    report.save_html(doc, str(page))
    browser = shutil.which("chromium") or "/usr/bin/chromium"
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1280,1600",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), proc.stderr[-2000:]
    w, h = _png_size(shot)
    assert (w, h) == (1280, 1600)
    # a rendered page, not a blank one: the coloured token spans give many distinct colours
    try:
        from matplotlib.image import imread
    except ImportError:
        return
    pixels = (imread(str(shot))[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 20
