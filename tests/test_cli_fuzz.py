"""Fuzzing the command line: whatever the arguments, the input file or the checkpoint, the
answer is a result or exit code 2 with one line — never a traceback, never a hang.

* the argument parser and every check made before a model loads (hypothesis, in-process,
  loading replaced by a marker: an argument list that reaches it passed every check);
* the input-file reader of ``--file`` (hypothesis, with one tiny model loaded once);
* damaged checkpoints: truncated and garbled msgpack and safetensors, weights of the wrong
  shape or dtype, missing or renamed weights.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import family_checkpoints as fc
from jaxpr_semiring.cli import commands as cli
from jaxpr_semiring.cli import loading

TEXT = "The keys to the cabinet [MASK] on the table."
SETTINGS = dict(
    deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return fc.build("bert", str(tmp_path_factory.mktemp("fuzz") / "bert"))


@pytest.fixture(scope="module")
def loaded(ckpt):
    return loading.load(ckpt)


class _Reached(Exception):
    """The arguments passed every check made before a model loads."""


@contextlib.contextmanager
def _deadline(seconds, what):
    def alarm(*_):
        raise TimeoutError(f"{what} ran over {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _main(argv, seconds=120):
    """``cli.main(argv)`` in-process: (exit code or "reached", stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        _deadline(seconds, f"jaxpr-semiring {argv}"),
    ):
        try:
            rc = cli.main(argv)
        except SystemExit as e:
            rc = e.code
        except _Reached:
            rc = "reached"
    return rc, out.getvalue(), err.getvalue()


def _assert_one_line(rc, out, err, argv):
    assert rc == 2, (argv, rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], (argv, err)
    assert "Traceback" not in err and "\x1b" not in err, (argv, err)


# ------------------------------------------------------------------------------ arguments

WEIRD = st.sampled_from(
    [
        "",
        " ",
        "\t",
        "-",
        "--",
        "\x1b[2J",
        "\x00",
        "\udcff",
        "é",
        "[MASK]",
        "a,b",
        ":",
        "@",
        "\n",
        "'",
        '"',
        "%s",
        "{}",
        "../",
        "/",
    ]
)
TEXTY = st.one_of(WEIRD, st.text(max_size=12), st.text(st.characters(codec="utf-8"), max_size=6))


def _argv_strategy(paths):
    path = st.one_of(st.sampled_from(paths), TEXTY)
    semiring = st.one_of(
        st.sampled_from(
            [
                "max-product",
                "real",
                "log",
                "entropy",
                "counting",
                "max-abs",
                "top-k:2",
                "top-k:0",
                "top-k:x",
                "top-k:",
                "max-product,real",
                "real,,log",
                "MaxProduct",
            ]
        ),
        TEXTY,
    )
    target = st.one_of(
        st.sampled_from(
            [
                "logit-diff:is,are",
                "logit-diff:is",
                "logit-diff:is,are@x",
                "logit-diff:,",
                "top2",
                "class-diff:0,1",
                'similarity:"A key."',
                'similarity:"  "',
                "similarity:",
                "bogus:1",
                "logit-diff:is,are@3",
                "logit-diff:is,are@-99",
            ]
        ),
        TEXTY,
    )
    number = st.one_of(st.integers(-3, 40).map(str), TEXTY)
    option = st.one_of(
        st.tuples(st.just("--text"), st.one_of(st.just(TEXT), TEXTY)),
        st.tuples(st.just("--target"), target),
        st.tuples(st.just("--semiring"), semiring),
        st.tuples(
            st.just("--field"), st.one_of(st.sampled_from(["top_pos", "value", "entropy"]), TEXTY)
        ),
        st.tuples(st.sampled_from(["--json", "--out", "--html", "--file", "--out-dir"]), path),
        st.tuples(
            st.sampled_from(["--token", "--batch-size", "--num-processes", "--process-id"]), number
        ),
        st.tuples(
            st.just("--buckets"), st.one_of(st.sampled_from(["8,16", "exact", "0", "x"]), TEXTY)
        ),
        st.tuples(
            st.just("--format"), st.one_of(st.sampled_from(["auto", "text", "jsonl"]), TEXTY)
        ),
        st.tuples(st.sampled_from(["--heads", "--no-progress", "--help", "--heads"])),
    )
    stray = st.tuples(TEXTY)  # a word out of place: rarer, argparse stops at it
    text = st.one_of(
        st.just([("--text", TEXT)]),
        st.just([("--text", TEXT)]),
        st.just([("--text", TEXT)]),
        st.lists(st.tuples(st.just("--text"), TEXTY), max_size=1),
    )
    options = st.tuples(text, st.lists(option, max_size=5), st.lists(stray, max_size=1)).map(
        lambda t: t[0] + t[1] + t[2][:1] * (len(t[1]) % 3 == 0)
    )
    command = st.sampled_from(["flows"] * 6 + ["top-path"] * 3 + ["flow", ""])
    model = st.one_of(st.sampled_from(paths[:1] * 8), path)
    return st.tuples(command, model, options)


@pytest.fixture(scope="module")
def paths(ckpt, tmp_path_factory):
    d = tmp_path_factory.mktemp("paths")
    (d / "in.txt").write_text(TEXT + "\n")
    (d / "empty.txt").write_text("")
    (d / "a_dir").mkdir()
    return [
        ckpt,
        "minilm",
        str(d / "in.txt"),
        str(d / "empty.txt"),
        str(d / "a_dir"),
        str(d / "new.json"),
        str(d / "missing" / "x.json"),
        str(d / "in.txt" / "x"),
        "-",
        str(d / "out"),
        "/dev/null",
        str(d),
    ]


def test_fuzz_arguments(paths, monkeypatch, tmp_path):
    """Every argument list ends in exit code 2 and one line, ``--help`` (exit 0), or passes
    every check and reaches the model loader."""

    def reached(spec):
        raise _Reached(spec)

    monkeypatch.setattr(loading, "load", reached)
    monkeypatch.chdir(tmp_path)
    seen = set()

    @settings(max_examples=300, **SETTINGS)
    @given(_argv_strategy(paths))
    def check(case):
        command, model, options = case
        argv = [command, model] + [x for opt in options for x in opt]
        rc, out, err = _main(argv, 30)
        seen.add(rc)
        if rc == "reached":
            return
        if rc == 0:
            assert "--help" in argv and "usage" in out.lower(), (argv, out, err)
            return
        _assert_one_line(rc, out, err, argv)

    check()
    assert {2, "reached"} <= seen
    assert sorted(os.listdir(tmp_path)) == sorted(
        f for f in os.listdir(tmp_path) if not f.startswith(".tmp-")
    )


# ------------------------------------------------------------------------------ input files

LINE = st.one_of(
    st.sampled_from(
        [
            TEXT,
            "The key to the cabinets [MASK] on the table.",
            "No mask here.",
            "",
            " ",
            "[MASK] " * 40,
            "\ufeff" + TEXT,
            TEXT + "\r",
            "\x00\x1b[2J",
            json.dumps({"text": TEXT}),
            json.dumps({"text": TEXT, "good": "is", "bad": "are"}),
            json.dumps({"text": TEXT, "good": "is"}),
            json.dumps({"text": 5}),
            json.dumps({"text": TEXT, "target": "bogus"}),
            json.dumps({"text": TEXT, "target": 7}),
            json.dumps({"text": TEXT, "target": "similarity:x"}),
            '{"text": "\\udcff [MASK]"}',
            json.dumps({"text": TEXT, "good": "is", "bad": "qqxqqzz"}),
            "[1, 2]",
            "null",
            "{",
            '"a string"',
            json.dumps({"text": "x" * 500}),
        ]
    ),
    st.text(max_size=20),
)


@settings(max_examples=16, **SETTINGS)
@given(
    lines=st.lists(LINE, max_size=5),
    fmt=st.sampled_from(["auto", "text", "jsonl"]),
    raw=st.sampled_from([b"", b"\xff\xfe", b"\n"]),
)
def test_fuzz_input_file(ckpt, loaded, tmp_path_factory, lines, fmt, raw):
    """Any input file: a run that accounts for every line (records, skipped, empty), or exit
    code 2 with one error line (a file that is not UTF-8)."""
    d = tmp_path_factory.mktemp("in")
    src = d / "in.txt"
    data = "\n".join(lines).encode("utf-8", "surrogatepass") + raw
    src.write_bytes(data)
    # lines of the file as docs/datasets.md defines them (a generated line may hold "\n")
    physical = data.split(b"\n")
    n_lines = len(physical) - (physical[-1] == b"")
    argv = [
        "flows",
        ckpt,
        "--file",
        str(src),
        "--out-dir",
        str(d / "out"),
        "--target",
        "logit-diff:is,are",
        "--semiring",
        "real",
        "--no-progress",
        "--format",
        fmt,
        "--buckets",
        "16",
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loading, "load", lambda spec: loaded)
        rc, out, err = _main(argv)
    assert "Traceback" not in err and "\x1b" not in err, err
    if rc == 2:
        errors = [ln for ln in err.splitlines() if "error:" in ln]
        assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
        return
    assert rc == 0, err
    records = (d / "out" / "flows.jsonl").read_text().splitlines()
    skipped = (d / "out" / "skipped.jsonl").read_text().splitlines()
    assert all(json.loads(r)["index"] < max(n_lines, 1) for r in records + skipped)


# ------------------------------------------------------------------------------ checkpoints


def _state(ckpt):
    from flax.serialization import msgpack_restore

    with open(os.path.join(ckpt, "flax_model.msgpack"), "rb") as fh:
        return msgpack_restore(fh.read())


def _with_state(d, edit):
    from flax.serialization import msgpack_serialize

    state = _state(d)
    edit(state)
    with open(os.path.join(d, "flax_model.msgpack"), "wb") as fh:
        fh.write(msgpack_serialize(state))


def _emb(state):
    return state["bert"]["embeddings"]["word_embeddings"]


def _cut(name, keep):
    def edit(d):
        p = os.path.join(d, name)
        data = open(p, "rb").read()
        open(p, "wb").write(data[: keep(len(data))])

    return edit


def _garble(name, start, stop, seed=0):
    def edit(d):
        p = os.path.join(d, name)
        data = bytearray(open(p, "rb").read())
        stop_ = min(stop, len(data))
        rng = np.random.default_rng(seed)
        data[start:stop_] = rng.integers(0, 256, stop_ - start, dtype=np.uint8).tobytes()
        open(p, "wb").write(bytes(data))

    return edit


def _to_safetensors(d):
    """Replace the msgpack weights by safetensors ones, as save_pretrained writes them."""
    from safetensors.flax import save_file
    from flax.traverse_util import flatten_dict

    flat = {".".join(k): v for k, v in flatten_dict(_state(d)).items()}
    save_file(flat, os.path.join(d, "model.safetensors"), metadata={"format": "flax"})
    os.remove(os.path.join(d, "flax_model.msgpack"))


def _edit_header(change):
    def edit(d):
        p = os.path.join(d, "model.safetensors")
        data = open(p, "rb").read()
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8 : 8 + n])
        change(header)
        new = json.dumps(header).encode()
        new += b" " * (-len(new) % 8)
        open(p, "wb").write(struct.pack("<Q", len(new)) + new + data[8 + n :])

    return edit


def _st(edit):
    """Convert to safetensors, then ``edit``."""

    def both(d):
        _to_safetensors(d)
        edit(d)

    return both


def _emb_key(header):
    return next(k for k in header if "word_embeddings" in k)


def _set(header, key, **kv):
    header[key].update(kv)


MSGPACK = "flax_model.msgpack"
DAMAGE = {  # name -> (edit of a copy of the checkpoint, whether a result may still come)
    "msgpack empty": (_cut(MSGPACK, lambda n: 0), False),
    "msgpack 100 bytes": (_cut(MSGPACK, lambda n: 100), False),
    "msgpack half": (_cut(MSGPACK, lambda n: n // 2), False),
    "msgpack less one byte": (_cut(MSGPACK, lambda n: n - 1), False),
    "msgpack garbled head": (_garble(MSGPACK, 0, 64), False),
    "msgpack all garbage": (_garble(MSGPACK, 0, 1 << 40), False),
    "msgpack wrong shape": (
        lambda d: _with_state(
            d,
            lambda s: s["bert"]["embeddings"].update(
                word_embeddings={"embedding": _emb(s)["embedding"][:, :8]}
            ),
        ),
        False,
    ),
    "msgpack int32 weights": (
        lambda d: _with_state(
            d,
            lambda s: s["bert"]["embeddings"].update(
                word_embeddings={"embedding": _emb(s)["embedding"].astype(np.int32)}
            ),
        ),
        False,
    ),
    "msgpack complex weights": (
        lambda d: _with_state(
            d,
            lambda s: s["bert"]["embeddings"].update(
                word_embeddings={"embedding": _emb(s)["embedding"].astype(np.complex64)}
            ),
        ),
        False,
    ),
    "msgpack bool weights": (
        lambda d: _with_state(
            d,
            lambda s: s["bert"]["embeddings"].update(
                word_embeddings={"embedding": _emb(s)["embedding"] > 0}
            ),
        ),
        False,
    ),
    "msgpack string weight": (
        lambda d: _with_state(
            d, lambda s: s["bert"]["embeddings"].update(word_embeddings={"embedding": "oops"})
        ),
        False,
    ),
    "msgpack missing weight": (
        lambda d: _with_state(d, lambda s: s["bert"]["embeddings"].pop("word_embeddings")),
        False,
    ),
    "msgpack renamed weight": (
        lambda d: _with_state(
            d,
            lambda s: s["bert"]["embeddings"].update(
                words=s["bert"]["embeddings"].pop("word_embeddings")
            ),
        ),
        False,
    ),
    "msgpack float16 weights": (
        lambda d: _with_state(
            d,
            lambda s: s["bert"]["embeddings"].update(
                word_embeddings={"embedding": _emb(s)["embedding"].astype(np.float16)}
            ),
        ),
        True,
    ),
    "safetensors empty": (_st(_cut("model.safetensors", lambda n: 0)), False),
    "safetensors length only": (_st(_cut("model.safetensors", lambda n: 8)), False),
    "safetensors huge header": (_st(_garble("model.safetensors", 0, 8)), False),
    "safetensors garbled header": (_st(_garble("model.safetensors", 8, 200)), False),
    "safetensors truncated data": (_st(_cut("model.safetensors", lambda n: n - 100)), False),
    "safetensors int32 dtype": (
        _st(_edit_header(lambda h: _set(h, _emb_key(h), dtype="I32"))),
        False,
    ),
    "safetensors wrong shape": (
        _st(_edit_header(lambda h: _set(h, _emb_key(h), shape=h[_emb_key(h)]["shape"][::-1]))),
        False,
    ),
    "safetensors no metadata": (_st(_edit_header(lambda h: h.pop("__metadata__"))), False),
    "safetensors pytorch metadata": (
        _st(_edit_header(lambda h: h.update(__metadata__={"format": "pt"}))),
        True,
    ),
    "safetensors renamed weight": (
        _st(_edit_header(lambda h: h.update(words=h.pop(_emb_key(h))))),
        False,
    ),
    "safetensors garbled data": (_st(_garble("model.safetensors", -4096, -2048)), True),
    "sharded safetensors index": (
        _st(
            lambda d: os.rename(
                os.path.join(d, "model.safetensors"),
                os.path.join(d, "model.safetensors.index.json"),
            )
        ),
        False,
    ),
    "config garbage": (_garble("config.json", 0, 1 << 40), False),
    "config negative layers": (lambda d: _edit_config(d, num_hidden_layers=-1), False),
    "config zero heads": (lambda d: _edit_config(d, num_attention_heads=0), False),
    "config wrong vocab": (lambda d: _edit_config(d, vocab_size=10), False),
    "tokenizer garbage": (
        lambda d: (
            _garble("tokenizer.json", 0, 1 << 40)(d),
            os.remove(os.path.join(d, "vocab.txt")),
        ),
        False,
    ),
}


def _edit_config(d, **changes):
    p = os.path.join(d, "config.json")
    cfg = json.load(open(p))
    cfg.update(changes)
    json.dump(cfg, open(p, "w"))


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_checkpoint_is_one_line(ckpt, tmp_path, damage):
    edit, may_work = DAMAGE[damage]
    d = str(tmp_path / "m")
    shutil.copytree(ckpt, d)
    edit(d)
    argv = ["flows", d, "--text", TEXT, "--target", "logit-diff:is,are", "--semiring", "real"]
    rc, out, err = _main(argv)
    if may_work and rc == 0:
        assert "layer 0" in out
        return
    _assert_one_line(rc, out, err, damage)


@pytest.mark.slow
@settings(max_examples=40, **SETTINGS)
@given(
    name=st.sampled_from([MSGPACK, "model.safetensors"]),
    start=st.integers(0, 4000),
    size=st.integers(1, 64),
    seed=st.integers(0, 2**16),
)
def test_fuzz_garbled_weights(ckpt, tmp_path_factory, name, start, size, seed):
    """Random bytes anywhere in the weights (tests/test_cli_fuzz.py's damaged checkpoints
    cover the same behaviour at fixed places)."""
    d = str(tmp_path_factory.mktemp("g") / "m")
    shutil.copytree(ckpt, d)
    if name != MSGPACK:
        _to_safetensors(d)
    _garble(name, start, start + size, seed)(d)
    rc, out, err = _main(
        ["flows", d, "--text", TEXT, "--target", "logit-diff:is,are", "--semiring", "real"]
    )
    if rc != 0:
        _assert_one_line(rc, out, err, (name, start, size))
