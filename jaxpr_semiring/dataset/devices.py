"""Every local device, and several processes, with JAX's own machinery.

* :func:`init_distributed`: ``jax.distributed.initialize`` from explicit settings or the
  environment JAX reads (``JAX_COORDINATOR_ADDRESS``, Slurm, Open MPI, Kubernetes, TPU pods).
  Each process then takes its share of the inputs (:func:`share`) and runs it on its own
  devices, independently: no collective, so processes never wait for each other and a
  crashed one loses only its own unfinished batch.
* :class:`ShardedMap`: a per-input function ``compute(params, row)`` vmapped over the batch
  axis, which ``jax.shard_map`` splits over a ``jax.make_mesh`` of the local devices (weights
  replicated, ``NamedSharding``), jitted; compiled ahead of time once per batch shape, timing
  the compilation.

>>> import jax.numpy as jnp, numpy as np
>>> m = ShardedMap(lambda p, row: p * row["x"].sum(), devices=1)
>>> np.asarray(m(2.0, {"x": np.ones((3, 4))})).tolist()
[8.0, 8.0, 8.0]
>>> share(list(range(5)), process=1, processes=2)
[1, 3]
"""

from __future__ import annotations

import os
import time
import weakref
from typing import Any, Callable, Sequence

import jax
from jax.sharding import NamedSharding, PartitionSpec

from .inputs import DatasetError

__all__ = ["init_distributed", "share", "local_mesh", "ShardedMap", "BATCH_AXIS"]

BATCH_AXIS = "batch"


def init_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
) -> bool:
    """Start ``jax.distributed`` (before any other JAX call) when any setting is given, when
    ``JAX_COORDINATOR_ADDRESS`` is set, or with ``auto=True`` (JAX's cluster detection).
    Returns whether it was started; :class:`DatasetError` if it cannot start."""
    given = (coordinator, num_processes, process_id)
    if not (auto or any(x is not None for x in given) or os.environ.get("JAX_COORDINATOR_ADDRESS")):
        return False
    if jax.distributed.is_initialized():
        return True
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    except (ValueError, TypeError, RuntimeError) as e:
        raise DatasetError(
            f"cannot start jax.distributed ({str(e).splitlines()[0]}): pass "
            f"--coordinator HOST:PORT, --num-processes N and --process-id I (or run "
            f"under a cluster manager JAX detects)."
        ) from None
    return True


def share(items: Sequence, process: int | None = None, processes: int | None = None) -> list:
    """This process's share of ``items``: every ``processes``-th one from position ``process``
    (default: ``jax.process_index()`` of ``jax.process_count()``); interleaved, so every
    process gets short and long inputs alike."""
    p = jax.process_index() if process is None else process
    n = jax.process_count() if processes is None else processes
    return list(items[p::n])


def local_mesh(devices: int | Sequence | None = None) -> jax.sharding.Mesh:
    """A one-axis mesh (``"batch"``) over this process's devices (all, the first ``devices``,
    or the given ones)."""
    local = jax.local_devices()
    if isinstance(devices, int):
        if not 1 <= devices <= len(local):
            raise ValueError(f"devices={devices}: this process has {len(local)} local device(s).")
        local = local[:devices]
    elif devices is not None:
        local = list(devices)
    return jax.make_mesh((len(local),), (BATCH_AXIS,), devices=local)


# compute function -> {(devices, params and batch signatures): compiled executable}; a later
# run of the same function (a resume in the same process, the next data set) compiles nothing
_EXECUTABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((x.shape, x.dtype, getattr(x, "sharding", None)) for x in leaves)


class ShardedMap:
    """``compute(params, row)`` over a batch (every leaf of ``batch`` has a leading batch axis,
    a multiple of the device count), split over the local devices.

    ``params`` is replicated (placed once per distinct object); results stay on the devices
    until read (``jax.device_get``), so the next batch can be dispatched first. Compiled
    programs are kept per ``compute`` function (weakly) and shape, across instances;
    ``compile_seconds`` is this instance's ahead-of-time compilation time so far.
    ``check_compiled(compiled)`` runs on every new executable before it is kept or run (it may
    raise: e.g. refuse a program that cannot fit in memory).
    """

    def __init__(
        self,
        compute: Callable,
        devices: int | Sequence | None = None,
        check_compiled: Callable[[Any], None] | None = None,
    ):
        self.check_compiled = check_compiled
        self.mesh = local_mesh(devices)
        self.size = self.mesh.devices.size
        spec = PartitionSpec(BATCH_AXIS)
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.split = NamedSharding(self.mesh, spec)
        body = jax.vmap(compute, in_axes=(None, 0))
        # check_vma=False: the body has no collectives (each device maps its own rows), and
        # the tropical kernels' per-backend branches (lax.platform_dependent around an FFI
        # call) do not carry shard_map's varying-axis types
        self._fn = jax.jit(
            jax.shard_map(
                body,
                mesh=self.mesh,
                in_specs=(PartitionSpec(), spec),
                out_specs=spec,
                check_vma=False,
            )
        )
        self._compiled = _EXECUTABLES.setdefault(compute, {})
        self._params: tuple = (None, None)
        self.compile_seconds = 0.0

    def place_params(self, params: Any) -> Any:
        """``params`` replicated on the mesh (cached for the same object)."""
        if self._params[0] is not params:
            self._params = (params, jax.device_put(params, self.replicated))
        return self._params[1]

    def __call__(self, params: Any, batch: dict) -> Any:
        placed = self.place_params(params)
        batch = jax.device_put(batch, self.split)
        key = (tuple(d.id for d in self.mesh.devices.flat), _signature(placed), _signature(batch))
        if key not in self._compiled:
            t = time.perf_counter()
            compiled = self._fn.lower(placed, batch).compile()
            self.compile_seconds += time.perf_counter() - t
            if self.check_compiled is not None:
                self.check_compiled(compiled)
            self._compiled[key] = compiled
        return self._compiled[key](placed, batch)
