"""Helpers for clients that hold the model inside another object (sentence-transformers).

HF Trainer, pipelines, ``generate`` and ``torch.compile(backend="qgraph")`` take the compiled
module (or the model) as it is; see docs/integrations.md.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from qgraph.api import compile as compile_model
from qgraph.compiled import CompiledModule
from qgraph.errors import InputError

#: sentences to capture with when the caller gives none (two, so the batch stays dynamic)
DEFAULT_EXAMPLE_TEXTS = ("qgraph compiles this sentence.", "And this one, a little longer.")


def compile_sentence_transformer(
    sentence_transformer: Any,
    example_texts: Sequence[str] = DEFAULT_EXAMPLE_TEXTS,
    **compile_options: Any,
) -> Any:
    """Compile the Hugging Face model inside a ``SentenceTransformer`` in place.

    The first module of a SentenceTransformer (its ``Transformer``) holds the HF model as
    ``.model``; this compiles that model with example inputs tokenized from
    ``example_texts`` and puts the compiled module in its place, so ``encode`` and training
    run through the rewritten graph. ``compile_options`` go to ``qgraph.compile``.
    Returns the ``CompiledModule`` (its ``report`` says what was offloaded).
    """
    try:
        holder = sentence_transformer[0]
        model = holder.model
    except (TypeError, IndexError, AttributeError, KeyError):
        raise InputError(
            "compile_sentence_transformer takes a sentence_transformers.SentenceTransformer "
            f"whose first module holds a Hugging Face model; got {type(sentence_transformer)}."
        ) from None
    if isinstance(model, CompiledModule):
        raise InputError("this SentenceTransformer's model is compiled already.")
    if isinstance(example_texts, str) or len(example_texts) < 2:
        raise InputError(
            "example_texts must be a list of at least two sentences (a batch of one would fix "
            "the batch size at 1 in the capture)."
        )
    features = sentence_transformer.preprocess(list(example_texts))
    accepted = inspect.signature(model.forward).parameters
    example = {name: value for name, value in features.items() if name in accepted}
    example["return_dict"] = True  # what the Transformer module passes on every call
    compiled = compile_model(model, (), example, **compile_options)
    holder.model = compiled
    return compiled
