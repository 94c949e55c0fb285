"""Data sets at scale: throughput of the dataset layer on BERT-6L, against ``jax.grad``.

Workload: ``--n`` generated subject–verb agreement sentences (``tasks.sva.generate``, seed 0;
JSON Lines with per-line ``good``/``bad`` verbs, the verb masked) through
``FlaxBertForMaskedLM`` with bench_bert's BERT-6L configuration (random init, MiniLM's uncased
WordPiece tokenizer, the same vocabulary). Each run is ``jaxpr-semiring flows --file`` as the
command line does it (:func:`jaxpr_semiring.cli.dataset.flows_task`: the single-text checks,
component flows at every branch point of every layer for max-product **and** entropy in one
jitted program, one JSON document per semiring appended to ``flows.jsonl``), or the same
inputs, batching and target through ``jax.grad`` w.r.t. the input embeddings (per-token sums
written as records): the gradient baseline of the same pipeline.

Runs (each in a fresh results directory): flows at batch 1, flows bucketed and batched
(``--batch-size`` per device), flows with 4 forced host devices (a subprocess with
``--xla_force_host_platform_device_count=4``, batch per device as given); the same three with
``jax.grad``. Reported per run: inputs/s over the wall time, compile time, inputs/s without
compilation (steady), and flows ÷ jax.grad time per input (steady) at the same batching.

    python benchmarks/bench_dataset.py --n 1000 --json benchmarks/dataset_cpu.json
    python benchmarks/bench_dataset.py --tiny          # smoke test: a tiny BERT, 12 sentences
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bench_bert import BERT_6L, TINY  # noqa: E402

RUNS = ("flows-b1", "flows", "flows-4dev", "grad-b1", "grad", "grad-4dev")


def build(tiny: bool):
    """(Loaded model, semirings' document builder) for BERT-6L or a tiny BERT."""
    from transformers import AutoTokenizer, BertConfig, FlaxBertForMaskedLM

    from jaxpr_semiring.cli import loading
    from jaxpr_semiring.models import presets

    config = dict(TINY, vocab_size=BERT_6L["vocab_size"]) if tiny else BERT_6L
    model = FlaxBertForMaskedLM(BertConfig(**config), seed=0)
    tokenizer = AutoTokenizer.from_pretrained(loading.minilm_dir())
    return loading.Loaded(
        "bert-6l-random" if not tiny else "bert-tiny-random",
        model,
        tokenizer,
        presets.PRESETS["bert"],
        "mlm",
        model.params,
    )


def document(loaded, S, cf, tokens, tgt):
    """The single-text document of flows computed by the dataset layer (``cli.document``, or
    FlowsRunner.document's builder until the command line exposes it)."""
    from jaxpr_semiring.cli import commands as cli

    if hasattr(cli, "document"):
        return cli.document(loaded, S, cf, tokens, tgt)
    r = cli.FlowsRunner(loaded, S)
    r.flows = lambda text: (cf, tokens, tgt)
    return r.document("")


def grad_task(loaded, prepare):
    """``(prepare, compute, record)``: jax.grad of the same target w.r.t. the embeddings."""
    from jaxpr_semiring.dataset import unpad
    from jaxpr_semiring.models.hf_bert import word_embedding_table, word_embeddings_replaced_by

    model = loaded.model

    def compute(params, row):
        ids, mask = row["input_ids"], row["attention_mask"]
        pos, a, b = row["target_0"], row["target_1"], row["target_2"]

        def f(e):
            with word_embeddings_replaced_by(e[None]):
                logits = model(ids[None], attention_mask=mask[None], params=params).logits
            return logits[0, pos, a] - logits[0, pos, b]

        value, g = jax.value_and_grad(f)(jnp.take(word_embedding_table(params), ids, axis=0))
        return value, g.sum(-1)

    def record(ex, prep, out):
        return {"target_value": out[0], "grad": unpad(out[1], prep.length)}

    return prepare, compute, record


def one_run(name: str, src: str, tiny: bool, batch_size: int) -> dict:
    """Run ``name`` (flows or grad, on this process's devices) over ``src``; its numbers."""
    from jaxpr_semiring import Entropy, MaxProduct
    from jaxpr_semiring.dataset import run_dataset
    from jaxpr_semiring.cli.dataset import flows_task

    loaded = build(tiny)
    task = flows_task(loaded, [MaxProduct(), Entropy()], None, False, document)
    if name.startswith("grad"):
        task = grad_task(loaded, task[0])
    with tempfile.TemporaryDirectory() as out:
        s = run_dataset(
            src,
            out,
            prepare=task[0],
            compute=task[1],
            record=task[2],
            params=loaded.model.params,
            options={"run": name},
            batch_size=batch_size,
            progress=sys.stderr.isatty(),
        )
    steady = s.seconds - s.compile_seconds
    return {
        "run": name,
        "devices": len(jax.local_devices()),
        "batch_per_device": batch_size,
        "inputs": s.computed,
        "skipped": len(s.skipped),
        "wall_s": s.seconds,
        "compile_s": s.compile_seconds,
        "inputs_per_s": s.rate,
        "steady_inputs_per_s": s.computed / steady if steady > 0 else None,
    }


def child(name: str, src: str, tiny: bool, batch_size: int, devices: int) -> dict:
    """``one_run`` in a subprocess with ``devices`` forced host devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    ).strip()
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        name,
        "--inputs",
        src,
        "--batch-size",
        str(batch_size),
    ] + ["--tiny"] * tiny
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{name} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    grad = {r["run"].replace("grad", "flows"): r for r in rows if r["run"].startswith("grad")}
    b1 = next((r for r in rows if r["run"] == "flows-b1"), None)
    out = [
        "| run | devices | batch/device | inputs | wall (s) | compile (s) | inputs/s | "
        "inputs/s w/o compile | × batch 1 (steady) | flows ÷ jax.grad per input (steady) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    fmt = lambda x: "—" if x is None else f"{x:.2f}"
    for r in rows:
        speedup = (
            r["steady_inputs_per_s"] / b1["steady_inputs_per_s"]
            if b1 and r["run"].startswith("flows") and r["steady_inputs_per_s"]
            else None
        )
        g = grad.get(r["run"]) if r["run"].startswith("flows") else None
        ratio = (
            g["steady_inputs_per_s"] / r["steady_inputs_per_s"]
            if g and r["steady_inputs_per_s"]
            else None
        )
        out.append(
            f"| {r['run']} | {r['devices']} | {r['batch_per_device']} | {r['inputs']} | "
            f"{r['wall_s']:.1f} | {r['compile_s']:.1f} | {fmt(r['inputs_per_s'])} | "
            f"{fmt(r['steady_inputs_per_s'])} | {fmt(speedup)} | {fmt(ratio)} |"
        )
    return "\n".join(out)


def save(path: str | None, result: dict) -> None:
    if path:  # after every run, atomically: a crash keeps what was measured
        with open(path + ".tmp", "w") as fh:
            json.dump(result, fh, indent=1)
        os.replace(path + ".tmp", path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="generated sentences (1000)")
    ap.add_argument("--batch-size", type=int, default=8, help="batch per device (8)")
    ap.add_argument("--devices", type=int, default=4, help="forced host devices (4)")
    ap.add_argument("--runs", default=",".join(RUNS), help=f"subset of {','.join(RUNS)}")
    ap.add_argument("--tiny", action="store_true", help="tiny BERT, 12 sentences (smoke test)")
    ap.add_argument("--json", help="write the results here (after every run)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(one_run(a.child, a.inputs, a.tiny, a.batch_size)))
        return
    runs = a.runs.split(",")
    unknown = sorted(set(runs) - set(RUNS))
    if unknown:
        ap.error(f"unknown runs {unknown}: choose from {', '.join(RUNS)}")
    n = 12 if a.tiny else a.n
    from jaxpr_semiring.paper import sva

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "sentences.jsonl")
        with open(src, "w") as fh:
            for ex in sva.generate(n, seed=0):
                fh.write(
                    json.dumps({"text": ex.masked_sentence, "good": ex.good, "bad": ex.bad}) + "\n"
                )
        result = {
            "date": datetime.date.today().isoformat(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_before": os.getloadavg(),
            "n": n,
            "model": "tiny" if a.tiny else "BERT-6L",
            "rows": [],
        }
        for name in runs:
            if name.endswith("-4dev"):
                row = child(name[:-5], src, a.tiny, a.batch_size, a.devices)
                row["run"] = name
            else:
                row = one_run(
                    name[:-3] if name.endswith("-b1") else name,
                    src,
                    a.tiny,
                    1 if name.endswith("-b1") else a.batch_size,
                )
                row["run"] = name
            result["rows"].append(row)
            save(a.json, result)
            print(
                f"{name}: {row['inputs']} inputs, {row['inputs_per_s']:.2f} inputs/s "
                f"(compile {row['compile_s']:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
        result["load_after"] = os.getloadavg()
        save(a.json, result)
    print(table(result["rows"]))


if __name__ == "__main__":
    main()
