"""What the command line and the data-set runner promise (docs/guarantees.md), on tiny
checkpoints written with save_pretrained:

* output files: a regular file (or a new path) is replaced atomically, anything else (a
  symlink's target, a FIFO, a character device, ``/dev/stdout``, ``-``) is written through and
  never replaced; every output path is checked before the model loads; a write error is exit
  code 2 and one line;
* no code from a model directory ever runs: ``trust_remote_code=False`` everywhere, ``auto_map``
  refused, stdin never read, pickles never loaded;
* bad input is one line and exit code 2 (a one-line exception from the Python API), never a
  traceback.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile
import threading

import jax
import jax.numpy as jnp
import pytest

import family_checkpoints as fc
import jaxpr_semiring as js
from jaxpr_semiring.cli import commands as cli, render as report
from jaxpr_semiring.cli import loading

TEXT = "The keys to the cabinet [MASK] on the table."
MLM = ["--target", "logit-diff:is,are", "--semiring", "real"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """name -> a tiny checkpoint: bert (masked LM), encoder (BERT without a head)."""
    root = tmp_path_factory.mktemp("ckpt")
    dirs = {"bert": fc.build("bert", str(root / "bert"))}
    from transformers import FlaxBertModel

    enc = FlaxBertModel(fc.config("bert", 30522), seed=1)
    enc.save_pretrained(str(root / "encoder"))
    fc.tokenizer("wordpiece").save_pretrained(str(root / "encoder"))
    dirs["encoder"] = str(root / "encoder")
    return dirs


def _run(capsys, *argv):
    """``cli.main`` in-process: (exit code, stdout, stderr); argparse's exit is a code too."""
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def _one_line_error(rc, err, *fragments):
    assert rc == 2, err
    assert err.startswith("jaxpr-semiring") and err.strip().count("\n") == 0, err
    assert "Traceback" not in err and ".tmp-" not in err and ".merge-" not in err, err
    for f in fragments:
        assert f in err, (f, err)


@pytest.fixture
def no_load(monkeypatch):
    """Loading a model is an error: what runs must have been decided before."""

    def load(spec):
        raise AssertionError(f"the model {spec!r} was loaded before the arguments were checked")

    monkeypatch.setattr(loading, "load", load)


@pytest.fixture
def quick_top_path(monkeypatch):
    """``top-path`` with a canned path (what is tested is how it is written; tests/test_cli.py
    computes real ones)."""
    doc = {
        "model": "m",
        "architecture": "bert",
        "target": "t",
        "target_value": 1.0,
        "tokens": ["a"],
        "start": {"token": 0, "dim": 0},
        "value": 1.0,
        "steps": [{"primitive": "tanh", "product": 1.0}],
    }
    monkeypatch.setattr(cli, "top_path_document", lambda *a: (doc, "top gradient path (canned)"))


def _char_device(tmp_path, name):
    """A character device to write to: a private twin of /dev/null or /dev/full where we may
    create one (as root), else the real one (which an unprivileged process cannot replace)."""
    minor = {"null": 3, "full": 7}[name]
    path = tmp_path / f"dev-{name}"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except (OSError, AttributeError):
        if os.geteuid() == 0:
            pytest.skip("cannot create a device node here")
        return f"/dev/{name}"
    return str(path)


def _unwritable_dir(tmp_path):
    """A directory this process cannot create files in (chmod 555; as root, a sysfs one)."""
    d = tmp_path / "ro"
    d.mkdir()
    os.chmod(d, 0o555)
    for cand in (str(d), "/sys/kernel"):
        try:
            fd, p = tempfile.mkstemp(dir=cand)
        except OSError:
            return cand
        os.close(fd)
        os.unlink(p)
    pytest.skip("no unwritable directory available")


# ------------------------------------------------------------------------------ output files


def test_json_through_a_symlink_keeps_the_link(ckpt, capsys, tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    rc, out, err = _run(capsys, "flows", ckpt["bert"], "--text", TEXT, *MLM, "--json", link)
    assert rc == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert report.from_json(target.read_text())["semiring"] == "real"
    assert sorted(os.listdir(tmp_path)) == ["link.json", "real.json"]


def test_json_into_a_fifo_is_written_through(ckpt, capsys, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()), daemon=True)
    reader.start()
    rc, out, err = _run(capsys, "flows", ckpt["bert"], "--text", TEXT, *MLM, "--json", fifo)
    reader.join(30)
    assert rc == 0, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced by a file"
    assert got and report.from_json(got[0].decode())["semiring"] == "real"


def test_a_character_device_is_written_through_never_replaced(ckpt, capsys, tmp_path):
    null = _char_device(tmp_path, "null")
    rc, out, err = _run(
        capsys, "flows", ckpt["bert"], "--text", TEXT, *MLM, "--json", null, "--html", null
    )
    assert rc == 0, err
    assert stat.S_ISCHR(os.lstat(null).st_mode), "the device was replaced by a file"
    assert not [f for f in os.listdir(os.path.dirname(null)) if f.startswith(".tmp-")]


def test_a_full_device_is_exit_2_and_one_line(ckpt, capsys, tmp_path, quick_top_path):
    full = _char_device(tmp_path, "full")
    rc, out, err = _run(capsys, "flows", ckpt["bert"], "--text", TEXT, *MLM, "--json", full)
    _one_line_error(rc, err, full, "No space left on device")
    assert stat.S_ISCHR(os.lstat(full).st_mode)
    rc, out, err = _run(capsys, "top-path", ckpt["bert"], "--text", TEXT, "--json", full)
    _one_line_error(rc, err, full, "No space left on device")


def test_dash_is_standard_output(ckpt, capsys, tmp_path, monkeypatch, quick_top_path):
    monkeypatch.chdir(tmp_path)
    rc, out, err = _run(capsys, "flows", ckpt["bert"], "--text", TEXT, *MLM, "--json", "-")
    assert rc == 0, err
    assert report.from_json(out)["semiring"] == "real"  # stdout is the document alone
    assert "layer 0" in err  # the table went to stderr
    assert os.listdir(tmp_path) == []
    rc, out, err = _run(capsys, "top-path", ckpt["bert"], "--text", TEXT, "--json", "-")
    assert rc == 0, err
    assert json.loads(out)["steps"] and "top gradient path" in err


@pytest.mark.parametrize("how", ["/dev/stdout", pytest.param("link", marks=pytest.mark.slow)])
def test_dev_stdout_is_written_through(ckpt, tmp_path, how):
    """In a shell: ``--json /dev/stdout > x`` (here: stdout a pipe) — the document on stdout,
    the table on stderr, nothing replaced."""
    path = "/dev/stdout"
    if how == "link":
        path = str(tmp_path / "out.json")
        os.symlink("/proc/self/fd/1", path)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxpr_semiring",
            "flows",
            ckpt["bert"],
            "--text",
            TEXT,
            *MLM,
            "--json",
            path,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    assert report.from_json(r.stdout)["semiring"] == "real"
    assert "layer 0" in r.stderr
    if how == "link":
        assert os.path.islink(path)


def _bad_paths(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    ro = _unwritable_dir(tmp_path)
    return [
        (str(tmp_path / "missing" / "f.json"), "does not exist"),
        (str(tmp_path / "a_dir"), "is a directory"),
        (str(tmp_path / "a_dir") + "/", "is a directory"),
        (str(tmp_path / "a_file" / "f.json"), "not a directory"),
        (os.path.join(ro, "f.json"), "cannot write in"),
        ("", "empty"),
        (str(tmp_path / "nul\0.json"), "NUL"),
    ]


@pytest.mark.parametrize("option", ["--json", "--out", "--html"])
def test_bad_output_paths_fail_before_the_model_loads(ckpt, capsys, tmp_path, no_load, option):
    for path, fragment in _bad_paths(tmp_path):
        rc, out, err = _run(capsys, "flows", ckpt["bert"], "--text", TEXT, option, path)
        _one_line_error(rc, err, option, fragment)


def test_top_path_json_is_checked_before_the_model_loads(ckpt, capsys, tmp_path, no_load):
    for path, fragment in _bad_paths(tmp_path):
        rc, out, err = _run(capsys, "top-path", ckpt["bert"], "--text", TEXT, "--json", path)
        _one_line_error(rc, err, "--json", fragment)


def test_two_outputs_to_one_file_is_refused(ckpt, capsys, tmp_path, no_load):
    p = tmp_path / "x"
    rc, out, err = _run(capsys, "flows", ckpt["bert"], "--text", TEXT, "--json", p, "--html", p)
    _one_line_error(rc, err, "--json", "--html")


def test_regular_file_replaced_atomically_keeps_its_mode(tmp_path):
    from jaxpr_semiring import outputs

    doc_path = tmp_path / "flows.json"
    doc_path.write_text("old")
    os.chmod(doc_path, 0o640)
    outputs.write_output(str(doc_path), "new")
    assert doc_path.read_text() == "new"
    assert stat.S_IMODE(os.stat(doc_path).st_mode) == 0o640
    assert os.listdir(tmp_path) == ["flows.json"]


def test_dev_fd_is_written_through_to_the_descriptor(tmp_path):
    """``--json /dev/fd/3 3>x.json``: the shell's descriptor gets the bytes; the file behind it
    is not replaced (that would leave the descriptor on a deleted inode)."""
    from jaxpr_semiring import outputs

    target = tmp_path / "x.json"
    with open(target, "wb") as fh:
        inode = os.fstat(fh.fileno()).st_ino
        for path in (f"/dev/fd/{fh.fileno()}", f"/proc/self/fd/{fh.fileno()}"):
            if os.path.exists(path):
                outputs.check_output_path(path, "--json")
                outputs.write_output(path, "ab")
    assert os.stat(target).st_ino == inode and target.read_text() in ("ab", "abab")
    assert os.listdir(tmp_path) == ["x.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from jaxpr_semiring import outputs

    p = tmp_path / "flows.json"
    p.write_text("old")

    def fail(fh):
        fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(outputs.OutputError, match="No space left on device") as e:
        outputs.write_output(str(p), fail)
    assert "\n" not in str(e.value) and ".tmp-" not in str(e.value) and str(p) in str(e.value)
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["flows.json"]


def test_report_save_keeps_mode_and_symlink(tmp_path):
    from test_report import make_doc

    target = tmp_path / "t.json"
    target.write_text("{}")
    os.chmod(target, 0o600)
    link = tmp_path / "l.json"
    link.symlink_to(target)
    report.save_json(make_doc("real"), str(link))
    assert link.is_symlink() and stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert report.from_json(target.read_text())["semiring"] == "real"


def test_stdout_write_error_is_one_line(ckpt, capsys, monkeypatch):
    class Full(io.TextIOWrapper):
        def write(self, s):
            raise OSError(errno.ENOSPC, "No space left on device")

    full = Full(io.BytesIO(), encoding="utf-8")
    err = io.StringIO()
    monkeypatch.setattr(sys, "stdout", full)
    monkeypatch.setattr(sys, "stderr", err)
    rc = cli.main(["flows", ckpt["bert"], "--text", TEXT, *MLM])
    monkeypatch.undo()
    _one_line_error(rc, err.getvalue(), "standard output", "No space left on device")


# ------------------------------------------------------------------------------ no one else's code


def _copy(ckpt, tmp_path, name="m", src="bert"):
    d = tmp_path / name
    shutil.copytree(ckpt[src], d)
    return d


def _edit_json(path, **changes):
    with open(path) as fh:
        obj = json.load(fh)
    for k, v in changes.items():
        if v is None:
            obj.pop(k, None)
        else:
            obj[k] = v
    with open(path, "w") as fh:
        json.dump(obj, fh)


@pytest.fixture
def no_stdin(monkeypatch):
    """stdin answers "y" to any prompt, and records that it was asked."""
    asked = []

    def ask(prompt=""):
        asked.append(prompt)
        return "y"

    monkeypatch.setattr(builtins, "input", ask)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 10))
    return asked


EVIL = "import pathlib; pathlib.Path({marker!r}).write_text('ran')\n"


def _evil_dir(ckpt, tmp_path, where, model_type):
    d = _copy(ckpt, tmp_path, f"evil-{where}-{model_type}")
    marker = str(tmp_path / f"ran-{where}-{model_type}")
    (d / "configuration_evil.py").write_text(EVIL.format(marker=marker))
    (d / "tokenization_evil.py").write_text(EVIL.format(marker=marker))
    if where == "config":
        _edit_json(
            d / "config.json",
            model_type=model_type,
            auto_map={"AutoConfig": "configuration_evil.EvilConfig"},
        )
    else:
        _edit_json(
            d / "tokenizer_config.json",
            auto_map={"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]},
        )
    return d, marker


@pytest.mark.parametrize(
    "where, model_type", [("config", "evil"), ("config", "bert"), ("tokenizer", "bert")]
)
def test_auto_map_is_refused_without_a_prompt(ckpt, capsys, tmp_path, no_stdin, where, model_type):
    d, marker = _evil_dir(ckpt, tmp_path, where, model_type)
    rc, out, err = _run(capsys, "flows", d, "--text", TEXT, *MLM)
    _one_line_error(rc, err, "auto_map")
    assert not no_stdin and not os.path.exists(marker)
    with pytest.raises(loading.UsageError, match="auto_map"):
        loading.load(str(d))


def test_every_transformers_call_is_told_trust_remote_code_false(ckpt, monkeypatch, no_stdin):
    import transformers

    monkeypatch.setenv("TRUST_REMOTE_CODE", "1")
    seen = []

    def spy(owner, name):
        orig = getattr(owner, name).__func__

        def call(cls, *a, **kw):
            seen.append(
                (
                    cls.__name__,
                    kw.get("trust_remote_code", "unset"),
                    kw.get("local_files_only", "unset"),
                )
            )
            if cls.__name__ == "AutoTokenizer":  # TransfoXL's switch to unpickle a vocabulary
                assert os.environ["TRUST_REMOTE_CODE"] == "False"
            return orig(cls, *a, **kw)

        monkeypatch.setattr(owner, name, classmethod(call))

    spy(transformers.AutoConfig, "from_pretrained")
    spy(transformers.AutoTokenizer, "from_pretrained")
    spy(transformers.FlaxPreTrainedModel, "from_pretrained")
    loading.load(ckpt["bert"])
    assert os.environ["TRUST_REMOTE_CODE"] == "1"
    assert {c for c, _, _ in seen} >= {"AutoConfig", "AutoTokenizer", "FlaxBertForMaskedLM"}
    assert all(t is False and l is True for _, t, l in seen), seen


class _Bomb:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_are_never_loaded(ckpt, capsys, tmp_path, no_stdin):
    marker = str(tmp_path / "unpickled")
    with_pickle = _copy(ckpt, tmp_path, "with_pickle")
    with open(with_pickle / "pytorch_model.bin", "wb") as fh:
        pickle.dump(_Bomb(marker), fh)
    only_pickle = _copy(ckpt, tmp_path, "only_pickle")
    os.remove(only_pickle / "flax_model.msgpack")
    shutil.copy(with_pickle / "pytorch_model.bin", only_pickle / "pytorch_model.bin")
    rc, out, err = _run(capsys, "flows", with_pickle, "--text", TEXT, *MLM)
    assert rc == 0, err
    rc, out, err = _run(capsys, "flows", only_pickle, "--text", TEXT, *MLM)
    _one_line_error(rc, err, "has no weights")
    assert not os.path.exists(marker)


# ------------------------------------------------------------------------------ one-line errors

BAD_CONFIGS = [  # (edit of the bert checkpoint, a fragment of the message)
    (lambda d: (d / "config.json").write_text("{not json"), "config.json is not valid JSON"),
    (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json is not a JSON object"),
    (lambda d: (d / "config.json").write_bytes(b"\xff\xfe\x00"), "config.json is not valid JSON"),
    (lambda d: _edit_json(d / "config.json", model_type=None), "has no model_type"),
    (
        lambda d: _edit_json(d / "config.json", model_type="no-such-model"),
        "model_type 'no-such-model'",
    ),
    (lambda d: _edit_json(d / "config.json", model_type=7), "model_type 7"),
    (
        lambda d: _edit_json(d / "config.json", architectures=["PreTrainedModel"]),
        "'PreTrainedModel'",
    ),
    (
        lambda d: _edit_json(d / "config.json", architectures=["GPT2LMHeadModel"]),
        "'GPT2LMHeadModel'",
    ),
    (lambda d: _edit_json(d / "config.json", architectures="BertForMaskedLM"), "architectures"),
    (lambda d: _edit_json(d / "config.json", hidden_size="big"), "cannot load"),
    (lambda d: (d / "tokenizer.json").write_text("{garbled"), "tokenizer"),
]


@pytest.mark.parametrize("k", range(len(BAD_CONFIGS)))
def test_bad_config_is_one_line(ckpt, capsys, tmp_path, no_stdin, k):
    edit, fragment = BAD_CONFIGS[k]
    d = _copy(ckpt, tmp_path)
    edit(d)
    if fragment == "tokenizer":
        os.remove(d / "vocab.txt")  # the garbled tokenizer.json is all there is
    rc, out, err = _run(capsys, "flows", d, "--text", TEXT, *MLM)
    _one_line_error(rc, err, fragment)


def test_semiring_and_field_typos_are_reported_before_the_model_loads(
    ckpt, capsys, no_load, tmp_path
):
    rc, out, err = _run(capsys, "flows", ckpt["bert"], "--text", TEXT, "--semiring", "max-prodcut")
    _one_line_error(rc, err, "unknown semiring 'max-prodcut'")
    rc, out, err = _run(capsys, "flows", ckpt["bert"], "--text", TEXT, "--field", "top_poss")
    _one_line_error(rc, err, "--field 'top_poss'", "top_pos")
    rc, out, err = _run(capsys, "flows", ckpt["bert"], "--text", TEXT, "--target", "logit-dif:a,b")
    _one_line_error(rc, err, "unknown target")
    rc, out, err = _run(capsys, "flows", ckpt["bert"], "--text", TEXT, "--target", "logit-diff:a")
    _one_line_error(rc, err, "write logit-diff:A,B")
    rc, out, err = _run(capsys, "top-path", ckpt["bert"], "--text", " ", "--target", "bogus")
    _one_line_error(rc, err, "the text is empty")
    inputs = tmp_path / "in.txt"
    inputs.write_text(TEXT + "\n")
    rc, out, err = _run(
        capsys,
        "flows",
        ckpt["bert"],
        "--file",
        inputs,
        "--out-dir",
        tmp_path / "o",
        "--field",
        "top_poss",
    )
    _one_line_error(rc, err, "--field")


@pytest.mark.parametrize(
    "spec", ['similarity:"  "', "similarity:'   '", "similarity:   ", 'similarity:" \t "']
)
def test_whitespace_similarity_text_blames_the_target(ckpt, capsys, spec):
    rc, out, err = _run(
        capsys, "flows", ckpt["encoder"], "--text", "The keys are here.", "--target", spec
    )
    _one_line_error(rc, err, "--target similarity")
    assert "--text" not in err


def test_escape_sequences_are_not_printed_raw(ckpt, capsys, tmp_path):
    evil = "\x1b]0;owned\x07\x1b[2J"
    d = _copy(ckpt, tmp_path, "enc" + evil, src="encoder")
    rc, out, err = _run(
        capsys,
        "flows",
        d,
        "--text",
        "The keys" + evil + " are here.",
        "--target",
        f'similarity:"A key{evil}."',
    )
    assert rc == 0, err
    assert "\x1b" not in out and "\x07" not in out and "\x1b" not in err
    assert "\\x1b" in out
    rc, out, err = _run(capsys, "flows", d, "--text", "x", "--semiring", evil)
    assert rc == 2 and "\x1b" not in err and "\x1b" not in out


def test_argument_errors_are_one_line(ckpt, capsys):
    for argv in (
        [],
        ["flows"],
        ["top-path", ckpt["bert"]],
        ["flows", ckpt["bert"], "--bogus"],
        ["top-path", ckpt["bert"], "--text", "x", "--token", "one"],
        ["nope"],
    ):
        rc, out, err = _run(capsys, *argv)
        assert rc == 2 and err.strip().count("\n") == 0 and "error" in err, (argv, err)
        assert "usage" not in err.lower() and "--help" in err


# ------------------------------------------------------------------------------ data sets


def _file_args(model, inputs, out, *extra):
    return [
        "flows",
        model,
        "--file",
        inputs,
        "--out-dir",
        out,
        "--target",
        "logit-diff:is,are",
        "--semiring",
        "real",
        "--no-progress",
        *extra,
    ]


def test_unwritable_out_dir_fails_before_the_model_loads(ckpt, capsys, tmp_path, no_load):
    inputs = tmp_path / "in.txt"
    inputs.write_text(TEXT + "\n")
    ro = _unwritable_dir(tmp_path)
    for out_dir, fragment in (
        (os.path.join(ro, "out"), "cannot write"),
        (inputs, "Not a directory"),
        (str(tmp_path / "o\0"), "NUL"),
    ):
        rc, out, err = _run(capsys, *_file_args(ckpt["bert"], inputs, out_dir))
        _one_line_error(rc, err, "--out-dir", fragment)


def _after_first_record(monkeypatch, action):
    """Run ``action()`` when the data-set run has computed its first record."""
    from jaxpr_semiring.cli import dataset as dataset_cli

    task = dataset_cli.flows_task

    def flows_task(*a, **kw):
        prepare, compute, record = task(*a, **kw)

        def rec(*b):
            action()
            return record(*b)

        return prepare, compute, rec

    monkeypatch.setattr(dataset_cli, "flows_task", flows_task)


def test_out_dir_made_read_only_mid_run(ckpt, capsys, tmp_path, monkeypatch):
    """The results directory becomes read-only after the first record (as ``chmod a-w`` in
    another shell would: the open part file still takes appends, new files are refused):
    exit code 2, one line naming the directory; a re-run finishes the job."""
    inputs = tmp_path / "in.txt"
    inputs.write_text(TEXT + "\nThe key to the cabinets [MASK] on the table.\n")
    out_dir = tmp_path / "out"
    real, started, made = tempfile.mkstemp, [], []

    def mkstemp(*a, dir=None, prefix=None, **kw):
        if started and dir is not None and os.path.realpath(dir) == str(out_dir.resolve()):
            made.append(dir)
            raise PermissionError(
                errno.EACCES, "Permission denied", os.path.join(dir, (prefix or "tmp") + "x1y2z3")
            )
        return real(*a, dir=dir, prefix=prefix, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    _after_first_record(monkeypatch, lambda: started.append(1))
    rc, out, err = _run(capsys, *_file_args(ckpt["bert"], inputs, out_dir))
    assert made
    _one_line_error(rc, err.strip().splitlines()[-1] + "\n", str(out_dir), "Permission denied")
    monkeypatch.undo()
    rc, out, err = _run(capsys, *_file_args(ckpt["bert"], inputs, out_dir))
    assert rc == 0, err
    assert len((out_dir / "flows.jsonl").read_text().splitlines()) == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_out_dir_chmod_read_only_mid_run(ckpt, capsys, tmp_path, monkeypatch):
    inputs = tmp_path / "in.txt"
    inputs.write_text(TEXT + "\n")
    out_dir = tmp_path / "out"
    _after_first_record(monkeypatch, lambda: os.chmod(out_dir, 0o555))
    try:
        rc, out, err = _run(capsys, *_file_args(ckpt["bert"], inputs, out_dir))
    finally:
        os.chmod(out_dir, 0o755)
    _one_line_error(rc, err.strip().splitlines()[-1] + "\n", str(out_dir))


def test_resume_refuses_another_tokenizer(ckpt, capsys, tmp_path):
    d = _copy(ckpt, tmp_path)
    inputs = tmp_path / "in.txt"
    inputs.write_text(TEXT + "\n")
    rc, out, err = _run(capsys, *_file_args(d, inputs, tmp_path / "out"))
    assert rc == 0, err
    _edit_json(d / "tokenizer_config.json", do_lower_case=False)
    rc, out, err = _run(capsys, *_file_args(d, inputs, tmp_path / "out"))
    _one_line_error(rc, err, "holds results of another run", "tokenizer")


# ------------------------------------------------------------------------------ the Python API


def test_a_prng_key_is_not_differentiable():
    f = lambda key, x: jnp.sum(x * jax.random.normal(key, x.shape))
    for argnums in (0, (0, 1)):
        with pytest.raises(TypeError, match="PRNG key") as e:
            js.semiring_grad(f, js.MaxProduct(), argnums=argnums)(jax.random.key(0), jnp.ones(3))
        assert "argnums" in str(e.value) and "\n" not in str(e.value)
    g = js.semiring_grad(f, js.Real(), argnums=1)(jax.random.key(0), jnp.ones(3))  # the fix
    assert g.shape == (3,)


@pytest.mark.parametrize(
    "make",
    [
        lambda f: js.semiring_grad(f, js.MaxProduct),
        lambda f: js.semiring_grad(js.MaxProduct)(f),
        lambda f: js.semiring_grad(semiring=js.MaxProduct)(f),
        lambda f: js.value_and_semiring_grad(f, js.MaxProduct),
        lambda f: js.semiring_grad(f, (js.MaxProduct, js.Entropy())),
    ],
)
def test_a_semiring_class_instead_of_an_instance(make):
    f = lambda x: jnp.sum(jnp.tanh(x))
    with pytest.raises(TypeError, match=r"pass an instance: MaxProduct\(\)") as e:
        make(f)(jnp.ones(2))
    assert "\n" not in str(e.value)
    with pytest.raises(TypeError, match=r"pass an instance: TopK\(\)"):
        js.semiring_grad(f, js.TopK)(jnp.ones(2))


def test_flows_runner_refuses_a_semiring_class(ckpt):
    loaded = loading.load(ckpt["bert"])
    with pytest.raises(TypeError, match=r"pass an instance: Entropy\(\)"):
        cli.FlowsRunner(loaded, js.Entropy)


# ------------------------------------------- 6. no unbounded run: memory is checked up front


@pytest.mark.slow  # 30 s; test_memory_limit_names_the_option and cli/memory.py's doctest
# (XLA's memory analysis of a compiled program) cover the same path
def test_top_k_too_large_for_memory_is_refused_after_compiling(ckpt, capsys, tmp_path):
    """K = 10^7 slots per element needs terabytes: one line, exit 2, nothing written (before
    this check the run allocated until the machine ran out)."""
    out = tmp_path / "f.json"
    rc, _, err = _run(
        capsys,
        "flows",
        ckpt["bert"],
        "--text",
        "the [MASK] is here .",
        "--semiring",
        "top-k:10000000",
        "--json",
        out,
    )
    _one_line_error(
        rc, err, "--semiring top-k:10000000 needs about", "TiB", "use a smaller K or a shorter text"
    )
    assert not out.exists()


def test_memory_limit_names_the_option(ckpt, capsys, monkeypatch):
    from jaxpr_semiring.cli import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 1024)
    rc, _, err = _run(capsys, "flows", ckpt["bert"], "--text", "the [MASK] is here .")
    _one_line_error(
        rc,
        err,
        "--semiring max-product needs about",
        "more than the 1.0 KiB available",
        "use a shorter text",
    )
