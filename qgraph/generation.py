"""Running Hugging Face ``generate`` through a compiled module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["generation_view"]


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
