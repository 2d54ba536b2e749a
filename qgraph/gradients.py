"""Choosing the gradient method of each quantum kernel, checked against the backend."""

from __future__ import annotations

from collections.abc import Mapping

from qgraph.backends import GRADIENT_METHODS, Capabilities
from qgraph.backends.base import default_gradient_method, gradient_method_error
from qgraph.errors import InputError

KERNELS = ("qaap", "qrce")


def default_gradient(kernel: str, capabilities: Capabilities) -> str:
    """The kernel's method on this backend (``default_gradient_method``)."""
    return default_gradient_method(kernel, capabilities.differentiable)


def resolve_gradients(
    gradient: str | Mapping[str, str], backend_name: str, capabilities: Capabilities
) -> dict[str, str]:
    """The method per kernel for ``compile(gradient=...)``.

    ``"auto"`` takes each kernel's default; a method name applies to the kernels it is
    defined for (the other kernel keeps its default); a mapping names each kernel's method.
    """
    chosen = {kernel: default_gradient(kernel, capabilities) for kernel in KERNELS}
    if isinstance(gradient, Mapping):
        unknown = [k for k in gradient if k not in KERNELS]
        if unknown:
            raise InputError(f"gradient keys must be 'qaap' and/or 'qrce'; got {unknown}.")
        requested = dict(gradient)
    elif gradient == "auto":
        requested = {}
    elif gradient in GRADIENT_METHODS:
        requested = {kernel: gradient for kernel in GRADIENT_METHODS[gradient]}
    else:
        raise InputError(str(gradient_method_error(str(gradient), KERNELS[0])))
    for kernel, method in requested.items():
        problem = gradient_method_error(method, kernel)
        if problem is not None:
            raise InputError(problem)
        # Straight-through is the closed-form backward: every backend can give it.
        if method != "straight-through" and method not in capabilities.gradient_methods:
            raise InputError(
                f"backend {backend_name!r} cannot compute gradients by {method!r}; it supports "
                f"{list(capabilities.gradient_methods)}."
            )
        chosen[kernel] = method
    return chosen
