"""Running Hugging Face ``generate`` through a compiled module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from qgraph.errors import InputError

__all__ = ["generate", "generation_view"]


def generate(model: nn.Module, forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``model.generate(*args, **kwargs)`` with every step through ``forward`` (a compiled
    module's), without a KV cache: a cache object cannot pass through a captured graph."""
    if not callable(getattr(model, "generate", None)):
        raise AttributeError(
            f"{type(model).__name__} has no generate(); only generative models "
            "(e.g. GPT2LMHeadModel, LlamaForCausalLM) can generate."
        )
    if kwargs.get("use_cache"):
        raise InputError(
            "a compiled module generates without a KV cache (a cache object cannot pass "
            "through a captured graph); drop use_cache=True."
        )
    kwargs["use_cache"] = False
    view: Any = generation_view(model, forward)
    return view.generate(*args, **kwargs)


def generation_view(model: nn.Module, forward: Callable[..., Any]) -> nn.Module:
    """The model seen through a subclass whose forward is ``forward`` (a compiled module's):
    ``generate`` and the decoding loops it calls (``_sample``, ...) then run every step
    through the compiled graph, while reading and writing the model's own attributes (the
    view shares its ``__dict__``). The model itself is untouched, so captures still trace
    its own forward."""
    cls = type(model)

    def view_forward(view: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return forward(*args, **kwargs)

    view_cls = type(
        f"Compiled{cls.__name__}", (cls,), {"forward": view_forward, "__module__": cls.__module__}
    )
    view: nn.Module = object.__new__(view_cls)
    object.__setattr__(view, "__dict__", model.__dict__)
    return view
