"""Write a tiny random PyTorch checkpoint (Qwen 3 by default) with a tokenizer trained here, no
download: ``python examples/make_tiny_qwen3.py DIR`` then
``jaxpr-semiring flows DIR --text "the keys to the cabinet are"``.

``build(directory, model_type, seed, **config)`` writes any family of :data:`FAMILIES`
(``save_pretrained(safe_serialization=True)``: safetensors) for the tests and benchmarks.

>>> sorted(FAMILIES)[:3]
['bert', 'gemma', 'gemma2']
"""

from __future__ import annotations

import argparse
import functools
import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

CORPUS = [
    "the keys to the cabinet are on the table",
    "the key to the cabinets is on the table",
    "the author of the books is here and the authors are there",
    "a small model writes a short sentence about the weather",
]

_DEC = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention: 2 query heads per k/v head
    max_position_embeddings=64,
    tie_word_embeddings=False,
)
_HD = dict(_DEC, head_dim=8)

#: model_type → (config class, model class, config kwargs)
FAMILIES = {
    "llama": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            _DEC,
            rope_theta=500000.0,
            rope_scaling=dict(  # Llama 3.1's scaling
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=8,
            ),
        ),
    ),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(_DEC, sliding_window=4)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(_DEC)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(_HD)),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(_HD)),
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        dict(
            _HD,
            sliding_window=4,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
            query_pre_attn_scalar=8,
        ),
    ),
    "gemma3_text": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(
            _HD,
            sliding_window=4,
            query_pre_attn_scalar=8,
            layer_types=["sliding_attention", "full_attention"],
        ),
    ),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(_DEC, num_key_value_heads=4, pad_token_id=1)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", dict(_DEC, pad_token_id=1)),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=2),
    ),
    "bert": (
        "BertConfig",
        "BertForMaskedLM",
        dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            pad_token_id=1,
        ),
    ),
}


@functools.lru_cache(maxsize=1)
def tokenizer():
    """A byte-level BPE trained on :data:`CORPUS` (``<s>`` first, as Llama's; ``<mask>`` for
    masked-LM families)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers import trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS * 20,
        trainers.BpeTrainer(
            vocab_size=300,
            show_progress=False,
            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token=AddedToken("<mask>", lstrip=True, special=True),
    )


def model(model_type: str = "qwen3", seed: int = 0, vocab_size: int = 300, **config):
    """The family's tiny random PyTorch model (eager attention, float32)."""
    import torch
    import transformers

    cfg_cls, model_cls, kwargs = FAMILIES[model_type]
    cfg = getattr(transformers, cfg_cls)(**dict(kwargs, vocab_size=vocab_size, **config))
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    return getattr(transformers, model_cls)(cfg).eval()


def build(directory: str, model_type: str = "qwen3", seed: int = 0, **config) -> str:
    """Write the tiny checkpoint (safetensors weights, config, tokenizer) to ``directory``."""
    tok = tokenizer()
    model(model_type, seed, len(tok), **config).save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    return directory


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("directory")
    ap.add_argument("--model-type", default="qwen3", choices=sorted(FAMILIES))
    a = ap.parse_args()
    print(build(a.directory, a.model_type))
