"""``run_dataset``: a per-input computation over a whole data set, batched, on every device,
in several processes, resumable; the compute is injected.

The caller gives three functions:

* ``prepare(example) -> Prepared``: tokenize one :class:`Example` and check it (raise
  :class:`InputError` with a one-line message to skip it); cheap, runs on the host.
* ``compute(params, row) -> pytree``: the jittable per-input computation on one padded row
  (``row[name]`` for every token array, padded to the bucket length, plus ``"attention_mask"``,
  ``"length"`` and the per-input args); vmapped, sharded over the local devices and jitted
  here.
* ``record(example, prepared, output) -> dict | list[dict]``: the JSON record(s) of one input
  from its output (numpy leaves; cut padded positions with :func:`unpad`). ``"index"`` and
  ``"text"`` are added in front.

Padding must not change a record: mask padded positions out of the computation (an
attention mask: their attention weights are exactly 0) and cut them from the record. The paths
through padded positions then all have weight 0, which Real, Log, Entropy, Expectation,
MaxAbs and TopK ignore; MaxProduct ignores them wherever the best path is nonzero. Counting and
Boolean count zero-weight paths: run them with ``buckets="exact"`` (no padding).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, NamedTuple, Sequence, TextIO

import jax

from .batching import Prepared, bucket_lengths, bucket_of, stack
from .devices import ShardedMap, share
from .inputs import Example, InputError, Inputs, read_inputs
from .store import Block, ResultStore, to_json_line

__all__ = ["run_dataset", "Summary", "describe_lines"]


class Summary(NamedTuple):
    """What a :func:`run_dataset` call did.

    computed: inputs computed by this call (this process); done: inputs on disk (all
    processes, all runs); skipped: ``(index, error)`` of every skipped input on disk; empty:
    indices of empty lines; seconds, compile_seconds: wall and compile time of this call;
    output: the merged file, or None while other processes' parts are incomplete.
    """

    computed: int
    done: int
    expected: int
    skipped: list
    empty: list
    seconds: float
    compile_seconds: float
    output: str | None

    @property
    def rate(self) -> float:
        """Inputs per second of this call (wall time, compilation included)."""
        return self.computed / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """The one-line summary printed at the end of a run."""
        steady = self.seconds - self.compile_seconds
        rate = f"{self.rate:.2f} inputs/s"
        if self.computed and steady > 0 and self.compile_seconds > 0:
            rate += f" ({self.computed / steady:.2f} without compilation)"
        parts = [
            f"{self.computed} inputs in {self.seconds:.1f} s "
            f"(compile {self.compile_seconds:.1f} s), {rate}"
        ]
        if self.skipped:
            parts.append(
                f"{len(self.skipped)} skipped ({describe_lines([i for i, _ in self.skipped])})"
            )
        if self.empty:
            parts.append(f"{len(self.empty)} empty ({describe_lines(self.empty)})")
        parts.append(
            f"wrote {self.output}"
            if self.output
            else f"{self.done} of {self.expected} inputs on disk; the merge waits for the rest"
        )
        return "; ".join(parts)


def describe_lines(indices: Sequence[int], most: int = 10) -> str:
    """``"lines 3, 7, 12"`` (1-based) for 0-based indices, at most ``most`` listed."""
    shown = ", ".join(str(i + 1) for i in list(indices)[:most])
    more = f" and {len(indices) - most} more" if len(indices) > most else ""
    return f"line{'s' if len(indices) != 1 else ''} {shown}{more}"


def _progress(total: int, enabled: bool, stream: TextIO, label: str):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        raise ImportError(
            "progress bars need tqdm: pip install tqdm (or progress=False)."
        ) from None
    return tqdm(total=total, unit="input", desc=label, file=stream, dynamic_ncols=True)


def _plan(
    data: Inputs,
    found: dict,
    prepare: Callable,
    buckets,
    process: int,
    processes: int,
    say: Callable,
) -> tuple[dict, list]:
    """This process's share of the inputs not computed yet, prepared and grouped by bucket
    length; and the blocks of those that failed a check (reported through ``say``).

    An input an earlier run skipped is checked again: the options a resume may change (the
    buckets) can make it fit; if it fails the same way again nothing is said or written."""
    todo, skips = [], []

    def skip(index: int, text: str, error: InputError):
        message = str(error).splitlines()[0] if str(error) else "invalid input"
        known = found.get(index)
        if known is not None and known.skipped and known.skipped.get("error") == message:
            return
        say(f"{data.name}:{index + 1} (index {index}): {message}; skipped")
        skips.append(Block(index, [], message, text))

    mine = share(
        sorted([(e.index, e) for e in data.examples] + [(i, None) for i in data.invalid]),
        process,
        processes,
    )
    for index, ex in mine:
        if index in found and found[index].skipped is None:
            continue
        try:
            if ex is None:
                raise InputError(data.invalid[index])
            prep = prepare(ex)
            if not isinstance(prep, Prepared):
                raise TypeError(f"prepare must return a Prepared, got {type(prep).__name__}.")
            todo.append((ex, prep))
        except InputError as e:
            skip(index, "" if ex is None else ex.text, e)
    lengths = bucket_lengths([p.length for _, p in todo if p.pad], buckets)
    by_bucket: dict = {}
    for ex, prep in todo:
        try:
            length = bucket_of(prep.length, lengths) if prep.pad else prep.length
            by_bucket.setdefault(length, []).append((ex, prep))
        except InputError as e:
            skip(ex.index, ex.text, e)
    return by_bucket, skips


def run_dataset(
    inputs: str | os.PathLike | Sequence,
    out_dir: str | os.PathLike,
    *,
    prepare: Callable[[Example], Prepared],
    compute: Callable[[Any, dict], Any],
    record: Callable[[Example, Prepared, Any], dict | list],
    params: Any = None,
    options: dict | None = None,
    batch_size: int = 8,
    buckets: Sequence[int] | str | None = None,
    format: str = "auto",
    name: str = "flows",
    encode: Callable[[dict], str] = to_json_line,
    devices: int | Sequence | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
    about: dict | None = None,
    check_compiled: Callable[[Any], None] | None = None,
) -> Summary:
    """Compute every input of ``inputs`` (a file, one input per line, or a list of lines) and
    write ``out_dir/<name>.jsonl``: one or more records per input, in input order.

    ``options`` (JSON-able) and the input's content fingerprint the results: a directory
    written with other ones is refused. Put everything that changes a record in it (the
    model's files by content, not its path); ``about`` (JSON-able, not compared) is written
    into ``run.json`` by the run that creates it, for people. Re-running resumes: computed
    inputs are not recomputed, skipped ones are checked again (larger buckets may fit them).
    ``check_compiled(compiled)`` runs on each new executable before it runs (it may raise:
    e.g. refuse what cannot fit in memory).
    ``batch_size`` is per device; ``buckets`` the padded lengths (default powers of two from
    8; ``"exact"``: every length its own bucket, no padding); an input whose
    :class:`Prepared` says ``pad=False`` runs at its own length whatever the buckets. With
    ``jax.distributed`` started, each process computes its share on its own devices and
    writes its own part; the last to finish merges. ``encode`` turns a record into one JSON
    line. Messages (skipped lines, the summary) go to ``stream`` (default stderr). Raises
    :class:`~jaxpr_semiring.dataset.DatasetError` (one line) for an unreadable input, an
    unusable results directory (another run's, unwritable, read-only or full mid-run: the
    message names the file; re-running resumes) or one another process is writing (its pid).
    See the package docstring for an example.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    stream = sys.stderr if stream is None else stream
    start = time.perf_counter()
    data = read_inputs(inputs, format)
    process, processes = jax.process_index(), jax.process_count()
    tag = f"[process {process}/{processes}] " if processes > 1 else ""
    say = lambda msg: print(tag + msg, file=stream, flush=True)
    expected = len(data.examples) + len(data.invalid)
    store = ResultStore(
        out_dir,
        {
            "options": options or {},
            "expected": expected,
            "inputs": {"sha256": data.digest, "format": data.format, "lines": data.lines},
        },
        process,
        name,
        about,
    )
    try:
        by_bucket, skips = _plan(data, store.scan(), prepare, buckets, process, processes, say)
        if skips:
            store.append(skips)
        mapped = ShardedMap(compute, devices, check_compiled)
        rows = batch_size * mapped.size
        batches = [
            (length, items[i : i + rows])
            for length in sorted(by_bucket)
            for items in [by_bucket[length]]
            for i in range(0, len(items), rows)
        ]
        bar = _progress(sum(len(b) for _, b in batches), progress, stream, tag + name)

        def finish(items, out):
            out = jax.device_get(out)
            blocks = []
            for k, (ex, prep) in enumerate(items):
                recs = record(ex, prep, jax.tree.map(lambda a: a[k], out))
                recs = [recs] if isinstance(recs, dict) else list(recs)
                if any({"index", "text"} & set(r) for r in recs):
                    raise ValueError(
                        "a record must not have 'index' or 'text' keys (they are added)."
                    )
                blocks.append(
                    Block(
                        ex.index, [encode({"index": ex.index, "text": ex.text, **r}) for r in recs]
                    )
                )
            store.append(blocks)
            if bar is not None:
                bar.update(len(items))

        pending = None
        try:
            for length, items in batches:
                out = mapped(params, stack([p for _, p in items], length, rows))
                if pending is not None:  # read the previous batch while this one runs
                    finish(*pending)
                pending = (items, out)
            if pending is not None:
                finish(*pending)
        finally:
            if bar is not None:
                bar.close()
        found = store.scan()
        output = store.merge(found)
    finally:
        store.close()
    skipped = [(i, e.skipped["error"]) for i, e in sorted(found.items()) if e.skipped]
    summary = Summary(
        sum(len(b) for _, b in batches),
        len(found),
        expected,
        skipped,
        list(data.empty),
        time.perf_counter() - start,
        mapped.compile_seconds,
        output,
    )
    say(f"{name}: " + summary.line())
    return summary
