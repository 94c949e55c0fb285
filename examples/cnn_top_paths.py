"""Top gradient paths (max-product semiring) per layer of a small Flax CNN.

A CNN (conv → relu → max_pool → grouped conv → relu → avg_pool → dense, random weights) on one
random image. For the predicted class's logit, ``semiring_grad`` with ``MaxProduct`` gives every
parameter and input element the most positive / most negative product of local derivatives
along any path to the logit (convolutions are semiring contractions over patches; pooling
windows are exact). ``S.sum`` over all elements of a layer's kernel gives the layer's top path.

    python examples/cnn_top_paths.py --size 16 --channels 8
"""

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxpr_semiring as js


class CNN(nn.Module):
    channels: int
    classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.channels, (3, 3), padding="SAME", name="conv1")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(
            nn.Conv(self.channels, (3, 3), padding="SAME", feature_group_count=2, name="conv2")(x)
        )
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.classes, name="head")(x)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", type=int, default=16, help="image height = width")
    p.add_argument("--channels", type=int, default=8, help="conv channels (even)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    k_x, k_init = jax.random.split(jax.random.PRNGKey(args.seed))
    x = jax.random.normal(k_x, (1, args.size, args.size, 3))
    model = CNN(args.channels)
    params = model.init(k_init, x)
    target = int(jnp.argmax(model.apply(params, x)[0]))

    def logit(params, x):
        return model.apply(params, x)[0, target]

    S = js.MaxProduct()
    t0 = time.time()
    g_params, g_x = jax.jit(js.semiring_grad(logit, S, argnums=(0, 1)))(params, x)
    jax.block_until_ready(g_x)
    print(
        f"CNN {args.size}x{args.size}, {args.channels} channels; explaining class {target} "
        f"({time.time() - t0:.2f}s incl. compile)"
    )
    print(f"{'layer':<14} {'top_pos':>12} {'top_neg':>12}")
    rows = [("input", g_x)]
    for layer in ("conv1", "conv2", "head"):
        for name in ("kernel", "bias"):
            rows.append((f"{layer}/{name}", g_params["params"][layer][name]))
    for name, v in rows:
        agg = S.sum(v)  # ⊕ over every element of the tensor
        print(f"{name:<14} {float(agg.top_pos):>12.4e} {float(agg.top_neg):>12.4e}")


if __name__ == "__main__":
    main()
