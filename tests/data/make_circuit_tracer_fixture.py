"""Write tests/data/circuit_tracer_fixture.npz: an attribution graph computed by circuit-tracer
itself, with its node influence, graph scores, pruning and Neuronpedia JSON, so that
tests/test_features_circuit_tracer.py can compare this library against it without installing
circuit-tracer (4.7 GB with torch; it pins transformers <= 4.57.3).

Run once, offline, on the CPU, in a separate venv (never the project's):

    python3.11 -m venv /tmp/ctvenv
    /tmp/ctvenv/bin/pip install torch==2.13.0 circuit-tracer==0.5.0
    /tmp/ctvenv/bin/python tests/data/make_circuit_tracer_fixture.py

The model is a tiny random Llama-style TransformerLens model (2 layers, d_model 16, a 32-word
vocabulary) with random ReLU per-layer transcoders (every parameter uniform in [-0.5, 0.5];
circuit-tracer's own tests build theirs the same way); the tokenizer is a word-level one saved
to a temporary folder, so nothing is downloaded (HF_HUB_OFFLINE=1).

The file holds (arrays; ``ct_`` = computed by circuit-tracer):
  adjacency [n, n] float32 (adjacency[target, source]), active_features [n_features, 3] and
  activation_values [n_features] (the selected features, in node order), input_tokens,
  input_strings, logit_tokens, logit_strings, logit_probabilities, n_layers, n_features,
  n_errors, n_tokens, n_logits;
  ct_node_influence [n] (compute_node_influence with the logit probabilities as weights),
  ct_replacement_score, ct_completeness_score (compute_graph_scores);
  for the default thresholds (0.8, 0.98) and for (0.5, 0.9): ct_node_mask_<tag>,
  ct_edge_mask_<tag> (as [k, 2] (target, source) pairs), ct_cumulative_<tag> (prune_graph),
  ct_json_<tag> (the graph JSON create_graph_files writes);
  w/<name>: the model's and transcoders' weights; versions: the packages that made it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "circuit_tracer_fixture.npz")
WORDS = ["<bos>", "<unk>"] + [f"w{i}" for i in range(30)]
THRESHOLDS = {"default": (0.8, 0.98), "tight": (0.5, 0.9)}


def save_tokenizer(folder: str) -> None:
    """A word-level tokenizer over WORDS, saved as a transformers tokenizer folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>")
    fast.save_pretrained(folder)


def build_model(tokenizer_dir: str):
    from transformer_lens import HookedTransformerConfig

    from circuit_tracer.replacement_model import ReplacementModel
    from circuit_tracer.transcoder import SingleLayerTranscoder, TranscoderSet

    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=16,
        n_ctx=64,
        d_head=8,
        n_heads=2,
        d_mlp=32,
        d_vocab=len(WORDS),
        act_fn="silu",
        normalization_type="RMSPre",
        positional_embedding_type="rotary",
        rotary_dim=8,
        gated_mlp=True,
        final_rms=True,
        original_architecture="LlamaForCausalLM",
        model_name="tiny-llama",
        tokenizer_name=tokenizer_dir,
        default_prepend_bos=False,
        device="cpu",
        dtype=torch.float32,
        seed=0,
    )
    d_tc = 24
    transcoders = {
        layer: SingleLayerTranscoder(
            cfg.d_model, d_tc, nn.ReLU(), layer, device=torch.device("cpu"), dtype=torch.float32
        )
        for layer in range(cfg.n_layers)
    }
    tset = TranscoderSet(
        transcoders, feature_input_hook="mlp.hook_in", feature_output_hook="mlp.hook_out"
    )
    model = ReplacementModel.from_config(cfg, tset, backend="transformerlens")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every parameter, the transcoders' included: uniform(-0.5, 0.5)
        for _, p in model.named_parameters():
            p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * 0.5)
    return model


def main() -> None:
    import circuit_tracer
    import transformers
    from circuit_tracer import attribute
    from circuit_tracer.graph import compute_graph_scores, compute_node_influence, prune_graph
    from circuit_tracer.utils.create_graph_files import create_graph_files

    torch.manual_seed(0)
    tmp = tempfile.mkdtemp()
    save_tokenizer(tmp)
    model = build_model(tmp)
    words = "<bos> w3 w14 w7 w3 w21 w9"
    ids = torch.tensor([WORDS.index(w) for w in words.split()])
    graph = attribute(ids, model, max_n_logits=5, desired_logit_prob=0.9, batch_size=64)
    graph.scan = "tiny-llama"

    A = graph.adjacency_matrix.float()
    n = A.shape[0]
    n_logits = len(graph.logit_targets)
    n_pos = len(graph.input_tokens)
    n_layers = graph.cfg.n_layers
    n_features = len(graph.selected_features)
    logit_weights = torch.zeros(n)
    logit_weights[-n_logits:] = graph.logit_probabilities
    infl = compute_node_influence(A, logit_weights)
    replacement, completeness = compute_graph_scores(graph)
    sel = graph.selected_features
    tokenizer = model.tokenizer
    out = {
        "adjacency": A.numpy().astype(np.float32),
        "active_features": graph.active_features[sel].numpy().astype(np.int64),
        "activation_values": graph.activation_values[sel].float().numpy(),
        "input_tokens": graph.input_tokens.numpy().astype(np.int64),
        "input_strings": np.array([tokenizer.decode([int(t)]) for t in graph.input_tokens]),
        "logit_tokens": np.array([int(t.vocab_idx) for t in graph.logit_targets], np.int64),
        "logit_strings": np.array([str(t.token_str) for t in graph.logit_targets]),
        "logit_probabilities": graph.logit_probabilities.float().numpy(),
        "n_layers": np.int64(n_layers),
        "n_features": np.int64(n_features),
        "n_errors": np.int64(n_layers * n_pos),
        "n_tokens": np.int64(n_pos),
        "n_logits": np.int64(n_logits),
        "ct_node_influence": infl.numpy(),
        "ct_replacement_score": np.float64(replacement),
        "ct_completeness_score": np.float64(completeness),
        "versions": np.array(
            [
                f"circuit-tracer {circuit_tracer.__version__}",
                f"torch {torch.__version__}",
                f"transformers {transformers.__version__}",
                f"python {sys.version.split()[0]}",
            ]
        ),
    }
    for tag, (nt, et) in THRESHOLDS.items():
        node_mask, edge_mask, cumulative = prune_graph(graph, nt, et)
        out[f"ct_node_mask_{tag}"] = node_mask.numpy()
        out[f"ct_edge_mask_{tag}"] = np.argwhere(edge_mask.numpy()).astype(np.int32)
        out[f"ct_cumulative_{tag}"] = cumulative.numpy()
        create_graph_files(graph, f"ct-{tag}", tmp, node_threshold=nt, edge_threshold=et)
        with open(os.path.join(tmp, f"ct-{tag}.json")) as f:
            out[f"ct_json_{tag}"] = np.array(json.dumps(json.load(f), separators=(",", ":")))
    for name, p in model.transcoders.state_dict().items():
        out[f"w/transcoders.{name}"] = p.detach().float().numpy()
    for name, p in model.state_dict().items():
        if "transcoders" not in name and p.dtype.is_floating_point and p.numel() <= 4096:
            out[f"w/{name}"] = p.detach().float().numpy()
    np.savez_compressed(OUT, **out)
    print(
        f"{OUT}: {os.path.getsize(OUT)} bytes; {n} nodes ({n_features} features, "
        f"{n_logits} logits); replacement {replacement:.6f}, completeness {completeness:.6f}"
    )


if __name__ == "__main__":
    main()
