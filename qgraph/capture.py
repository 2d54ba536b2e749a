"""Capture: a user's nn.Module and example inputs -> a torch.fx GraphModule.

``torch.export.export(strict=False)`` is the main front end: it gives an ATen-level graph in
which attention is ``aten.scaled_dot_product_attention`` (or an explicit matmul/softmax chain)
and embeddings are ``aten.embedding``, each node tagged with its ``nn_module_stack``. Every
tensor dimension is exported as ``Dim.AUTO`` so batch and sequence length stay dynamic where
the model allows; the guards of the result say which sizes a call may use.
``torch.fx.symbolic_trace`` is the second front end, for plain modules that trace as they are.
"""

from __future__ import annotations

import contextlib
import inspect
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch.export import Dim

from qgraph.errors import CaptureError, InputError

Frontend = Literal["auto", "export", "symbolic_trace"]


@dataclass
class Captured:
    """A captured graph and how to feed it."""

    graph_module: fx.GraphModule
    frontend: str
    flatten_inputs: Callable[[tuple[Any, ...], dict[str, Any]], list[Any]]
    #: symbol -> allowed range of each dynamic size (torch.export's range_constraints)
    range_constraints: dict[Any, Any] = field(default_factory=dict)


def check_example_inputs(model: torch.nn.Module, args: Any, kwargs: Any) -> None:
    """Raise InputError unless ``args`` is a tuple/list and ``kwargs`` a dict the model accepts."""
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"qgraph.compile takes a torch.nn.Module; got {type(model).__name__}.")
    if not isinstance(args, (tuple, list)):
        raise InputError(
            f"example_inputs must be a tuple of positional arguments, e.g. (input_ids,); got "
            f"{type(args).__name__}. Wrap a single tensor as (tensor,)."
        )
    if not isinstance(kwargs, dict):
        raise InputError(f"example_kwargs must be a dict; got {type(kwargs).__name__}.")
    empty = [
        tuple(leaf.shape)
        for leaf in pytree.tree_leaves((tuple(args), kwargs))
        if isinstance(leaf, torch.Tensor) and leaf.numel() == 0
    ]
    if empty:
        raise InputError(
            f"the example inputs hold an empty tensor (shape {empty[0]}); give an example "
            "with batch ≥ 1 and sequence length ≥ 1. Sizes stay symbolic in the captured "
            "graph, so calls of other sizes still run."
        )
    try:
        inspect.signature(model.forward).bind(*args, **kwargs)
    except TypeError as exc:
        raise InputError(
            f"the example inputs do not fit {type(model).__name__}.forward"
            f"{inspect.signature(model.forward)}: {exc}."
        ) from None


def _dynamic_shapes(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Dim.AUTO for every dimension of every tensor input, keyed by forward's parameter names
    (inputs in forward's ``**kwargs`` are named by ``_extras_named`` during the capture)."""
    signature = inspect.signature(model.forward)
    bound = signature.bind(*args, **kwargs)
    specs: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            for extra, extra_value in value.items():
                specs[extra] = _auto_dims(extra_value)
        else:
            specs[name] = _auto_dims(value)
    return specs


def _auto_dims(value: Any) -> Any:
    return pytree.tree_map(
        lambda x: {d: Dim.AUTO for d in range(x.dim())} if isinstance(x, torch.Tensor) else None,
        value,
    )


def _user_frame(exc: BaseException) -> str:
    """'file:line: code' of the deepest frame outside torch, or '' when there is none."""
    frames = traceback.extract_tb(exc.__traceback__)
    torch_dir = str(Path(torch.__file__).parent)
    for frame in reversed(frames):
        if not frame.filename.startswith(torch_dir) and "qgraph" not in frame.filename:
            return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
    return ""


def _advice(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if "Cache" in text or "past_key_values" in text:
        return "pass use_cache=False in example_kwargs so the model returns no KV cache."
    if "data-dependent" in text or "GuardOnDataDependent" in text:
        return (
            "the model branches on a tensor's value; rewrite the branch with torch.where or "
            "torch.cond, or compile with example inputs that take the branch you need."
        )
    if "Dynamic" in text or "Constraints violated" in text:
        return "compile with example inputs of the batch size and sequence length you will use."
    return (
        "make the model traceable by torch.export (see "
        "https://pytorch.org/docs/stable/export.html), or pass frontend='symbolic_trace' "
        "for a plain module."
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


#: how errors name the inputs of a capture: the example at compile, a call's afterwards
EXAMPLE_INPUTS = "the example inputs"
CALL_INPUTS = "the inputs of this call"


def raise_if_model_fails(
    model: torch.nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    inputs: str = EXAMPLE_INPUTS,
) -> None:
    """Raise InputError when the model itself fails eagerly on these inputs (``inputs``
    names them in the message)."""
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    except Exception as eager_exc:
        raise InputError(
            f"{type(model).__name__} itself fails on {inputs}, so there is nothing to "
            f"capture: {_first_line(eager_exc)}. Pass inputs that the model accepts."
        ) from eager_exc


def _var_keyword_names(
    model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[str]:
    """The inputs that land in forward's ``**kwargs`` (``return_dict``, HF Trainer's
    ``num_items_in_batch``, ...)."""
    signature = inspect.signature(model.forward)
    bound = signature.bind(*args, **kwargs)
    for name, value in bound.arguments.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            return list(value)
    return []


@contextlib.contextmanager
def _extras_named(model: torch.nn.Module, names: list[str]) -> Iterator[None]:
    """``model.forward`` with ``names`` as keyword-only parameters of its signature.

    torch.export takes no dynamic-shape spec for inputs in ``**kwargs`` (it fails with "Must
    provide a tree_name"), so for the capture those inputs get names of their own; the
    stand-in forward calls the real one, so a concurrent call sees no difference.
    """
    if not names:
        yield
        return
    had_own = "forward" in model.__dict__
    original = model.forward
    signature = inspect.signature(original)
    parameters = list(signature.parameters.values())
    position = next(i for i, p in enumerate(parameters) if p.kind is inspect.Parameter.VAR_KEYWORD)
    extras = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in names
    ]

    def forward(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **kwargs)

    forward.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*parameters[:position], *extras, *parameters[position:]]
    )
    object.__setattr__(model, "forward", forward)
    try:
        yield
    finally:
        if had_own:
            object.__setattr__(model, "forward", original)
        else:
            del model.__dict__["forward"]


def _export(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Captured:
    with _extras_named(model, _var_keyword_names(model, args, kwargs)):
        program = torch.export.export(
            model,
            tuple(args),
            kwargs,
            strict=False,
            dynamic_shapes=_dynamic_shapes(model, args, kwargs),
        )
    gm = program.module()
    assert isinstance(gm, fx.GraphModule)
    in_spec = gm._in_spec  # type: ignore[attr-defined]

    def flatten(call_args: tuple[Any, ...], call_kwargs: dict[str, Any]) -> list[Any]:
        return list(fx._pytree.tree_flatten_spec((call_args, call_kwargs), in_spec))

    return Captured(gm, "export", flatten, dict(program.range_constraints))


def _symbolic_trace(model: torch.nn.Module) -> Captured:
    gm = torch.fx.symbolic_trace(model)
    signature = inspect.signature(model.forward)

    def flatten(call_args: tuple[Any, ...], call_kwargs: dict[str, Any]) -> list[Any]:
        bound = signature.bind(*call_args, **call_kwargs)
        bound.apply_defaults()
        return list(bound.arguments.values())

    return Captured(gm, "symbolic_trace", flatten)


def capture(
    model: torch.nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    frontend: Frontend = "auto",
    inputs: str = EXAMPLE_INPUTS,
) -> Captured:
    """Capture ``model`` at these inputs, in its current train/eval mode.

    ``frontend="auto"`` tries torch.export and falls back to symbolic_trace; when both fail
    the CaptureError names the failing line and what to do. ``inputs`` names the inputs in
    errors (the example at compile; a later call's when it needs a capture of its own).
    """
    if frontend not in ("auto", "export", "symbolic_trace"):
        raise InputError(
            f"unknown frontend {frontend!r}; use 'auto', 'export' or 'symbolic_trace'."
        )
    if frontend == "symbolic_trace":
        try:
            return _symbolic_trace(model)
        except Exception as exc:
            raise CaptureError(
                f"torch.fx.symbolic_trace could not trace {type(model).__name__}: "
                f"{_first_line(exc)} (at {_user_frame(exc) or 'an unknown line'}). Use "
                "frontend='export' (torch.export handles Hugging Face models and "
                "nn.TransformerEncoder)."
            ) from exc
    try:
        return _export(model, args, kwargs)
    except Exception as export_exc:
        export_failure = export_exc
    raise_if_model_fails(model, args, kwargs, inputs)
    if frontend == "auto":
        try:
            return _symbolic_trace(model)
        except Exception:  # the export error is the one worth showing
            pass
    where = _user_frame(export_failure)
    raise CaptureError(
        f"torch.export could not capture {type(model).__name__}: {_first_line(export_failure)}"
        + (f"\n  failing line: {where}" if where else "")
        + f"\n  fix: {_advice(export_failure)}"
    ) from export_failure
