"""Data sets at scale: padding-exact batches, every device, several processes, nothing lost.

:func:`run_dataset` computes a per-input function over a file of inputs (one per line, plain
text or JSON Lines) and writes ``out_dir/flows.jsonl``: one or more records per input, in
input order, each with ``"index"`` (the 0-based line number) and ``"text"``. Inputs are
bucketed by length and padded with attention masks; batches are split over the local devices
(``jax.make_mesh``, ``jax.shard_map``); with ``jax.distributed`` each process runs its share;
results are appended as each batch finishes and a re-run resumes (docs/datasets.md).

>>> import tempfile, jax.numpy as jnp, jaxpr_semiring as js
>>> from jaxpr_semiring.dataset import Prepared, run_dataset, unpad
>>> def prepare(ex):                    # one float per character, the "model input"
...     return Prepared({"x": [float(ord(c) % 7) for c in ex.text]})
>>> def compute(params, row):           # per-token max-product flows of a masked sum of tanh
...     f = lambda x: jnp.sum(jnp.tanh(x * params) * row["attention_mask"])
...     return js.semiring_grad(f, js.MaxProduct())(row["x"]).top_pos
>>> def record(ex, prep, out):
...     return {"top_pos": [round(float(v), 3) for v in unpad(out, prep.length)]}
>>> out = tempfile.mkdtemp()
>>> s = run_dataset(["ab", "", "abc"], out, prepare=prepare, compute=compute, record=record,
...                 params=jnp.float32(0.5), progress=False, stream=open("/dev/null", "w"))
>>> print(open(s.output).read().strip())
{"index": 0, "text": "ab", "top_pos": [0.005, 0.5]}
{"index": 2, "text": "abc", "top_pos": [0.005, 0.5, 0.393]}
"""

from .inputs import DatasetError, Example, InputError, Inputs, read_inputs
from .batching import Prepared, bucket_lengths, bucket_of, stack, unpad
from .devices import ShardedMap, init_distributed, local_mesh, share
from .store import ResultStore, jsonable, to_json_line
from .runner import Summary, describe_lines, run_dataset

__all__ = [
    "run_dataset",
    "Summary",
    "Prepared",
    "Example",
    "Inputs",
    "InputError",
    "DatasetError",
    "read_inputs",
    "unpad",
    "init_distributed",
    "ShardedMap",
    "local_mesh",
    "share",
    "ResultStore",
    "bucket_lengths",
    "bucket_of",
    "stack",
    "jsonable",
    "to_json_line",
    "describe_lines",
]
