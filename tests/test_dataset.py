"""The dataset layer (jaxpr_semiring.dataset): reading, bucketing, resume, refusal, bad input.

The compute is a small two-layer attention model in plain jax.numpy ("toy"), with per-token
Real and MaxProduct flows w.r.t. its input embeddings (⊕ over hidden dims) in one jitted
function; its MLP is wide enough that MaxProduct's contractions take the compiled CPU kernel.
(Entropy, slow to compile, is in the BERT exactness test: tests/test_dataset_bert.py.) The same
task runs in subprocesses (``python tests/test_dataset.py worker ...``) for
the multi-device, multi-process and kill -9 tests (tests/test_dataset_procs.py).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr_semiring as js
from jaxpr_semiring.dataset import (
    DatasetError,
    InputError,
    Prepared,
    ResultStore,
    read_inputs,
    run_dataset,
    unpad,
)

# ------------------------------------------------------------------------------ the toy task

VOCAB, DIM, WIDE, MAX_LEN = 40, 32, 256, 16
SEMIRINGS = {"real": js.Real(), "max_product": js.MaxProduct()}


def toy_params(seed=0):
    rng = np.random.default_rng(seed)
    w = lambda *s: (rng.normal(size=s) / math.sqrt(s[0])).astype(np.float32)
    layers = [
        dict(q=w(DIM, DIM), k=w(DIM, DIM), v=w(DIM, DIM), up=w(DIM, WIDE), down=w(WIDE, DIM))
        for _ in range(2)
    ]
    return dict(embed=w(VOCAB, DIM), layers=layers, out=w(DIM, VOCAB))


def toy_prepare(ex):
    """Characters are tokens; a JSON line may name the target position and tokens."""
    ids = [ord(c) % VOCAB for c in ex.text]
    if len(ids) > MAX_LEN:
        raise InputError(f"too long for the model: {len(ids)} tokens > {MAX_LEN}")
    a, b = ex.fields.get("good", "a"), ex.fields.get("bad", "b")
    for t in (a, b):
        if not (isinstance(t, str) and len(t) == 1):
            raise InputError(f"target token {t!r} is not in the vocabulary")
    pos = int(ex.fields.get("pos", 0))
    if not 0 <= pos < len(ids):
        raise InputError(f"target position {pos} is outside the {len(ids)} tokens")
    return Prepared(
        {"ids": np.array(ids, np.int32)}, {"pos": pos, "a": ord(a) % VOCAB, "b": ord(b) % VOCAB}
    )


def toy_forward(params, x, mask):
    """Two layers: attention with an additive mask as Hugging Face's (padded keys get weight
    exactly 0), a tanh MLP, residuals."""
    bias = jnp.where(mask.astype(bool), 0.0, jnp.finfo(x.dtype).min)
    for p in params["layers"]:
        s = (x @ p["q"]) @ (x @ p["k"]).T / math.sqrt(DIM) + bias[None, :]
        x = x + jax.nn.softmax(s, axis=-1) @ (x @ p["v"])
        x = x + jnp.tanh(x @ p["up"]) @ p["down"]
    return x


def _flows(params, row, semirings):
    x0 = params["embed"][row["ids"]]

    def f(x):
        logits = toy_forward(params, x, row["attention_mask"])[row["pos"]] @ params["out"]
        return logits[row["a"]] - logits[row["b"]]

    out = {}
    for name, S in semirings.items():
        value, g = js.value_and_semiring_grad(f, S)(x0)
        out[name] = S.sum(g, axes=-1)
    out["value"] = value
    return out


def toy_compute(params, row):
    """Real and MaxProduct per token (one forward pass)."""
    return _flows(params, row, SEMIRINGS)


def real_compute(params, row):
    """Real only: cheaper to compile, for the tests of the run's mechanics."""
    return _flows(params, row, {"real": js.Real()})


def toy_record(ex, prep, out):
    n = prep.length
    rec = {"value": out["value"], "real": unpad(out["real"], n)}
    if "max_product" in out:
        rec["max_product"] = unpad(out["max_product"]._asdict(), n)
    return rec


def run_toy(inputs, out_dir, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("stream", io.StringIO())
    return run_dataset(
        inputs,
        out_dir,
        prepare=toy_prepare,
        compute=kw.pop("compute", real_compute),
        record=kw.pop("record", toy_record),
        params=kw.pop("params", toy_params()),
        options=kw.pop("options", {"task": "toy"}),
        **kw,
    )


SENTENCES = ["the keys", "a", "", "the keys to the", "is", "are the", "cabinets", "keys", "the dog"]


def write_lines(path, lines):
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return str(path)


def load_records(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def assert_same_records(a, b, rtol=1e-5, atol=1e-6):
    """Same inputs in the same order; numbers equal within float rounding; same ±inf."""
    assert [(r["index"], r["text"]) for r in a] == [(r["index"], r["text"]) for r in b]

    def walk(x, y, where):
        if isinstance(x, dict):
            assert set(x) == set(y), where
            for k in x:
                walk(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, list):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{where}[{i}]")
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            assert isinstance(y, (int, float)), where
            assert math.isclose(x, y, rel_tol=rtol, abs_tol=atol), (where, x, y)
        else:
            assert x == y, (where, x, y)

    for r, s in zip(a, b):
        walk(r, s, f"index {r['index']}")


def alone(params, prep):
    """The compute on one unpadded input, outside the dataset layer."""
    row = dict(
        prep.tokens,
        **prep.args,
        attention_mask=np.ones(prep.length, np.int32),
        length=np.int32(prep.length),
    )
    return jax.device_get(jax.jit(toy_compute)(params, row))


# ------------------------------------------------------------------------------ reading


def test_read_inputs_text_jsonl_empty_invalid(tmp_path):
    p = tmp_path / "in.txt"
    p.write_bytes(b"first line\r\n\n   \nsecond\n")
    d = read_inputs(str(p))
    assert d.format == "text" and d.lines == 4 and d.empty == [1, 2]
    assert [(e.index, e.line, e.text) for e in d.examples] == [
        (0, 1, "first line"),
        (3, 4, "second"),
    ]
    q = tmp_path / "in.jsonl"
    q.write_text('{"text": "a b", "good": "is"}\n\n[1, 2]\n{"text": 3}\n{broken\n')
    d = read_inputs(str(q))
    assert d.format == "jsonl" and d.empty == [1]
    assert [(e.index, e.text, e.fields["good"]) for e in d.examples] == [(0, "a b", "is")]
    assert (
        d.invalid[2]
        == d.invalid[3]
        == ('a JSON Lines input must be an object with a "text" string, e.g. {"text": "..."}')
    )
    assert d.invalid[4].startswith("not valid JSON (Expecting property name")
    # auto: a .txt file whose lines are JSON objects is JSON Lines; format= overrides
    (tmp_path / "o.txt").write_text('{"text": "x"}\n')
    assert read_inputs(str(tmp_path / "o.txt")).format == "jsonl"
    assert read_inputs(str(tmp_path / "o.txt"), "text").examples[0].text == '{"text": "x"}'
    assert read_inputs(str(p)).digest != read_inputs(str(q)).digest


def test_unreadable_inputs(tmp_path):
    with pytest.raises(
        DatasetError, match=r"^cannot read .*missing.txt: No such file or directory\.$"
    ):
        read_inputs(str(tmp_path / "missing.txt"))
    with pytest.raises(DatasetError, match=r"^cannot read .*: Is a directory\.$"):
        read_inputs(str(tmp_path))
    (tmp_path / "latin1.txt").write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(DatasetError, match=r"is not UTF-8 text \(line 2, byte 6\); convert it"):
        read_inputs(str(tmp_path / "latin1.txt"))


# ------------------------------------------------------------------------------ the run


def test_run_writes_records_in_input_order_with_summary(tmp_path):
    src = write_lines(tmp_path / "s.txt", SENTENCES)
    err = io.StringIO()
    s = run_toy(src, tmp_path / "out", batch_size=2, stream=err)
    recs = load_records(s.output)
    assert s.output == str(tmp_path / "out" / "flows.jsonl")
    assert [(r["index"], r["text"]) for r in recs] == [(i, t) for i, t in enumerate(SENTENCES) if t]
    for r in recs:  # one number per real token: padding never reaches a record
        n = len(r["text"])
        assert len(r["real"]) == n and set(r) == {"index", "text", "value", "real"}
    assert s.computed == s.done == s.expected == len(recs) and s.empty == [2]
    line = err.getvalue().strip().splitlines()[-1]
    assert (
        line.startswith(f"flows: {len(recs)} inputs in ")
        and "inputs/s" in line
        and "compile" in line
    )
    assert "1 empty (line 3)" in line and f"wrote {s.output}" in line
    assert open(tmp_path / "out" / "skipped.jsonl").read() == ""


def test_records_do_not_depend_on_batch_bucket_or_neighbours(tmp_path):
    """Alone (unpadded, outside the dataset layer) == batched == another bucket, every field."""
    src = write_lines(tmp_path / "s.txt", SENTENCES)
    params = toy_params()
    a = load_records(
        run_toy(src, tmp_path / "b2", batch_size=2, params=params, compute=toy_compute).output
    )
    b = load_records(
        run_toy(
            src, tmp_path / "b16", batch_size=2, buckets=[16], params=params, compute=toy_compute
        ).output
    )  # other neighbours, other bucket
    assert_same_records(a, b)
    for r in [a[1], a[-1]]:  # 1 and 7 tokens
        ex = read_inputs([r["text"]]).examples[0]
        prep = toy_prepare(ex)
        want = toy_record(ex, prep, alone(params, prep))
        assert_same_records(
            [r],
            [
                {
                    "index": r["index"],
                    "text": r["text"],
                    **json.loads(json.dumps(js.dataset.jsonable(want))),
                }
            ],
        )


def test_bad_inputs_are_reported_and_skipped(tmp_path):
    lines = [
        '{"text": "fine", "good": "x"}',
        "",
        '{"text": "' + "x" * (MAX_LEN + 1) + '"}',
        '{"text": "two", "good": "xy"}',
        '{"text": "pos", "pos": 7}',
        "{not json",
        '{"txt": "no text key"}',
        '{"text": "also fine"}',
    ]
    src = write_lines(tmp_path / "in.jsonl", lines)
    err = io.StringIO()
    s = run_toy(src, tmp_path / "out", stream=err)
    msgs = [m for m in err.getvalue().splitlines() if m.endswith("; skipped")]
    assert msgs == [
        f"{src}:3 (index 2): too long for the model: {MAX_LEN + 1} tokens > {MAX_LEN}; skipped",
        f"{src}:4 (index 3): target token 'xy' is not in the vocabulary; skipped",
        f"{src}:5 (index 4): target position 7 is outside the 3 tokens; skipped",
        f"{src}:6 (index 5): not valid JSON (Expecting property name enclosed in double quotes, "
        f"column 2); skipped",
        f'{src}:7 (index 6): a JSON Lines input must be an object with a "text" string, e.g. '
        '{"text": "..."}; skipped',
    ]
    assert [i for i, _ in s.skipped] == [2, 3, 4, 5, 6] and s.empty == [1]
    assert "5 skipped (lines 3, 4, 5, 6, 7); 1 empty (line 2)" in err.getvalue().splitlines()[-1]
    assert [r["index"] for r in load_records(s.output)] == [0, 7]
    skipped = load_records(tmp_path / "out" / "skipped.jsonl")
    assert [(r["index"], r["line"]) for r in skipped] == [(2, 3), (3, 4), (4, 5), (5, 6), (6, 7)]
    assert skipped[1]["text"] == "two" and skipped[1]["error"].startswith("target token 'xy'")
    # a re-run recomputes nothing and still lists the skipped lines
    again = run_toy(src, tmp_path / "out")
    assert again.computed == 0 and [i for i, _ in again.skipped] == [2, 3, 4, 5, 6]


def test_too_long_for_the_largest_bucket(tmp_path):
    err = io.StringIO()
    s = run_toy(["short", "a longer one"], tmp_path / "out", buckets=[8], stream=err)
    assert (
        "<inputs>:2 (index 1): 12 tokens: longer than the largest bucket (8); pass larger "
        "buckets (--buckets); skipped" in err.getvalue()
    )
    assert [r["index"] for r in load_records(s.output)] == [0]


def test_refuses_a_directory_of_another_run(tmp_path):
    src = write_lines(tmp_path / "s.txt", ["the keys", "is"])
    run_toy(src, tmp_path / "out", options={"semiring": "max-product", "model": "toy"})
    with pytest.raises(
        DatasetError,
        match=r"^\S*out holds results of another run \(options differ: "
        r"semiring 'max-product' there, 'entropy' here\); use another --out-dir, "
        r"or delete it to start over\.$",
    ):
        run_toy(src, tmp_path / "out", options={"semiring": "entropy", "model": "toy"})
    other = write_lines(tmp_path / "t.txt", ["the keys", "are"])
    with pytest.raises(DatasetError, match=r"computed from a different input file"):
        run_toy(other, tmp_path / "out", options={"semiring": "max-product", "model": "toy"})
    # batch size and buckets do not change records: a resume may use other ones
    s = run_toy(
        src,
        tmp_path / "out",
        options={"semiring": "max-product", "model": "toy"},
        batch_size=5,
        buckets=[16, 32],
    )
    assert s.computed == 0 and s.output


def test_unwritable_out_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        DatasetError,
        match=r"^cannot write to \S*file/out: Not a directory; "
        r"choose a writable --out-dir\.$",
    ):
        run_toy(["a"], tmp_path / "file" / "out")


class Crash(Exception):
    pass


def test_resume_after_a_crash_mid_run(tmp_path):
    """A failure after the first batch: its records are on disk; the re-run computes only the
    rest, and the output equals an uninterrupted run's."""
    src = write_lines(tmp_path / "s.txt", SENTENCES)
    params = toy_params()
    calls = []

    def failing(ex, prep, out):
        if len(calls) >= 2:
            raise Crash()
        calls.append(ex.index)
        return toy_record(ex, prep, out)

    with pytest.raises(Crash):
        run_toy(src, tmp_path / "out", batch_size=2, params=params, record=failing)
    assert not (tmp_path / "out" / "flows.jsonl").exists()
    # a torn block (a kill -9 inside a write) at the end of the part is ignored and cut
    part = tmp_path / "out" / "parts" / "part-00000.jsonl"
    with open(part, "a") as fh:
        fh.write('{"index": 9, "records": 1}\n{"index": 9, "text": "the d')
    s = run_toy(src, tmp_path / "out", batch_size=2, params=params)
    n = len([t for t in SENTENCES if t])
    assert s.computed == n - 2 and s.done == n
    whole = run_toy(src, tmp_path / "whole", batch_size=2, params=params)
    assert open(s.output).read() == open(whole.output).read()
    headers = [json.loads(line) for line in open(part) if '"records"' in line[:40]]
    assert sorted(h["index"] for h in headers) == sorted(i for i, t in enumerate(SENTENCES) if t)


def test_several_records_per_input_and_list_inputs(tmp_path):
    def two(ex, prep, out):
        return [
            {"semiring": "real", "flows": unpad(out["real"], prep.length)},
            {"semiring": "value", "flows": out["value"]},
        ]

    s = run_toy(["ab", "", "abc"], tmp_path / "out", record=two)
    recs = load_records(s.output)
    assert [(r["index"], r["semiring"], np.size(r["flows"])) for r in recs] == [
        (0, "real", 2),
        (0, "value", 1),
        (2, "real", 3),
        (2, "value", 1),
    ]


def test_store_merges_only_when_every_input_is_there(tmp_path):
    from jaxpr_semiring.dataset.store import Block

    a = ResultStore(tmp_path, {"expected": 3}, process=0)
    b = ResultStore(tmp_path, {"expected": 3}, process=1)
    a.append([Block(2, ['{"index": 2}'])])
    assert a.merge() is None
    b.append([Block(0, ['{"index": 0}']), Block(1, [], "bad", "t")])
    assert b.merge() == str(tmp_path / "flows.jsonl")
    assert open(tmp_path / "flows.jsonl").read() == '{"index": 0}\n{"index": 2}\n'


def test_distributed_settings_that_cannot_start():
    from jaxpr_semiring.dataset import init_distributed

    assert init_distributed() is False  # nothing asked for: one process
    # (here JAX has started already, which is one more reason it cannot)
    with pytest.raises(
        DatasetError,
        match=r"^cannot start jax.distributed \(.+\): pass "
        r"--coordinator HOST:PORT, --num-processes N and "
        r"--process-id I \(or run under a cluster manager",
    ):
        init_distributed(num_processes=2, process_id=0)


def test_semirings_in_one_program_share_the_forward_pass():
    """Several semirings in one jitted program (as the command line runs them): XLA merges
    their identical forward computations (flops of both = both alone − one forward pass)."""
    rng = np.random.default_rng(0)
    ws = [jnp.asarray(rng.normal(size=(128, 128)).astype(np.float32)) for _ in range(3)]
    x = jnp.ones((4, 128))

    def f(x, ws):
        for w in ws:
            x = jnp.tanh(x @ w)
        return x.sum()

    def flops(fn):
        c = jax.jit(fn).lower(x, ws).compile().cost_analysis()
        return (c[0] if isinstance(c, list) else c)["flops"]

    fwd = flops(f)
    real, log = (
        flops(lambda x, ws, S=S: js.semiring_grad(f, S)(x, ws)) for S in (js.Real(), js.Log())
    )
    both = flops(
        lambda x, ws: (js.semiring_grad(f, js.Real())(x, ws), js.semiring_grad(f, js.Log())(x, ws))
    )
    assert both < real + log - 0.9 * fwd


# ------------------------------------------------------------------------------ the worker


def worker(argv=None):
    """``python tests/test_dataset.py worker IN OUT [--devices N] [--batch-size B]
    [--coordinator HOST:PORT --num-processes P --process-id I] [--delay S]``: the toy task
    through run_dataset; prints the summary as JSON on stdout."""
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs")
    ap.add_argument("out_dir")
    ap.add_argument("--devices", type=int)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--coordinator")
    ap.add_argument("--num-processes", type=int)
    ap.add_argument("--process-id", type=int)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--cheap", action="store_true", help="Real only (fast to compile)")
    a = ap.parse_args(argv)
    from jaxpr_semiring.dataset import init_distributed

    init_distributed(a.coordinator, a.num_processes, a.process_id)

    def record(ex, prep, out):
        time.sleep(a.delay)
        return toy_record(ex, prep, out)

    s = run_toy(
        a.inputs,
        a.out_dir,
        devices=a.devices,
        batch_size=a.batch_size,
        record=record,
        compute=real_compute if a.cheap else toy_compute,
        stream=sys.stderr,
    )
    print(
        json.dumps(
            {
                "computed": s.computed,
                "done": s.done,
                "output": s.output,
                "devices": len(jax.local_devices()),
                "processes": jax.process_count(),
            }
        )
    )


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker(sys.argv[2:])
