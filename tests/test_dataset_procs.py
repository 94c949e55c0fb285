"""The dataset layer across devices and processes, in subprocesses (JAX reads XLA_FLAGS and the
distributed settings when it starts): 4 forced host devices == one device; two processes with
a localhost coordinator == one process; kill -9 mid-run, then resume == uninterrupted.

The task is tests/test_dataset.py's toy (Real and MaxProduct flows, the compiled CPU kernel
inside jax.shard_map), run by ``python tests/test_dataset.py worker ...``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from test_dataset import (
    SENTENCES,
    assert_same_records,
    load_records,
    run_toy,
    toy_compute,
    write_lines,
)

WORKER = [
    sys.executable,
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_dataset.py"),
    "worker",
]
TIMEOUT = 300


def env(devices: int | None = None) -> dict:
    e = dict(os.environ, JAX_PLATFORMS="cpu")
    e.pop("JAX_COORDINATOR_ADDRESS", None)
    if devices:
        e["XLA_FLAGS"] = (
            e.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
        ).strip()
    return e


def worker(args, devices=None, **kw):
    """Run the worker to completion; its summary (JSON on the last stdout line)."""
    p = subprocess.run(
        WORKER + [str(a) for a in args],
        env=env(devices),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        **kw,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The toy over SENTENCES in this process: one device, one process, uninterrupted."""
    d = tmp_path_factory.mktemp("ref")
    src = write_lines(d / "s.txt", SENTENCES)
    out = run_toy(src, d / "out", batch_size=2, compute=toy_compute).output
    return src, load_records(out)


def test_four_devices_equal_one(reference, tmp_path):
    src, ref = reference
    s = worker([src, tmp_path / "out", "--batch-size", 1], devices=4)
    assert s["devices"] == 4 and s["computed"] == len(ref)
    assert_same_records(load_records(s["output"]), ref)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_two_processes_equal_one(reference, tmp_path):
    src, ref = reference
    coord = f"localhost:{free_port()}"
    procs = [
        subprocess.Popen(
            WORKER
            + [
                src,
                str(tmp_path / "out"),
                "--coordinator",
                coord,
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            env=env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, err[-3000:]
            outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [o["processes"] for o in outs] == [2, 2] and [o["devices"] for o in outs] == [2, 2]
    assert sum(o["computed"] for o in outs) == len(ref) and min(o["computed"] for o in outs) > 0
    parts = sorted(os.listdir(tmp_path / "out" / "parts"))
    assert parts == ["part-00000.jsonl", "part-00001.jsonl"]
    # the last process to finish merged (maybe both did: the same bytes, renamed atomically)
    assert any(o["output"] for o in outs)
    assert_same_records(load_records(tmp_path / "out" / "flows.jsonl"), ref)


def _headers(path) -> list[int]:
    """Indices of the complete blocks of a part (each input has one record line here)."""
    lines = open(path, "rb").read().split(b"\n")
    done = []
    for i in range(0, len(lines) - 2, 2):  # header, record, ...; the last item is after "\n"
        if b'"records": 1' in lines[i] and i + 1 < len(lines) - 1:
            done.append(json.loads(lines[i])["index"])
    return done


def test_kill_9_then_resume_equals_uninterrupted(reference, tmp_path):
    src, ref = reference
    out = tmp_path / "out"
    part = out / "parts" / "part-00000.jsonl"
    p = subprocess.Popen(
        WORKER + [src, str(out), "--batch-size", "1", "--delay", "0.5"],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + TIMEOUT
        while time.time() < deadline and p.poll() is None:
            if part.exists() and _headers(part):
                break
            time.sleep(0.05)
        assert p.poll() is None, (
            "the worker finished before it could be killed: " + p.stderr.read()[-2000:]
        )
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    before = _headers(part)
    assert 1 <= len(before) < len(ref) and not (out / "flows.jsonl").exists()
    s = worker([src, out, "--batch-size", 1])
    assert s["computed"] == len(ref) - len(before)  # nothing complete is recomputed
    after = _headers(part)
    assert after[: len(before)] == before and sorted(after) == sorted(r["index"] for r in ref)
    assert_same_records(load_records(s["output"]), ref)
