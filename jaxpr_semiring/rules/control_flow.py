"""Control flow. ``jit``/``closed_call``/``remat``/``custom_jvp_call``/``custom_vjp_call`` never
reach a rule: the interpreter inlines their primal bodies. ``while`` has no static trip count."""
from __future__ import annotations

from . import register


class WhileLoopError(TypeError):
    pass


@register("while")
def while_loop(ctx, primals_in, primals_out, cts_out, **params):
    where = f" (at module path '{ctx.path}')" if ctx.path else ""
    raise WhileLoopError(
        "Reverse-mode semiring differentiation does not work for lax.while_loop or lax.fori_loop "
        f"with dynamic start/stop values{where}: the trip count is not known when the backward "
        "pass is built. Try using lax.scan, or lax.fori_loop with constant (Python int) "
        "start/stop values, which lowers to a scan.")
