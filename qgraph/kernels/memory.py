"""Memory estimates for the QRCE statevector simulation, checked before anything is allocated.

``qgraph.kernels.qrce`` simulates U token circuits at once, each a 2^q complex statevector,
so memory doubles with every qubit and grows linearly with the tokens simulated together.
``qrce_memory_bytes`` estimates the peak; ``qrce_memory_error`` compares it with the memory
available now and returns a message saying what to change, or None. The numbers are
estimates, meant to refuse settings that cannot fit, not to budget memory to the byte: peaks
measured on the CPU simulator (q = 8..22, U = 1..4096, L = 1..5, forward and backward) lie
within about 20 % of the autograd estimate; without autograd the estimate also covers the
shots backend's sampling of the read-out, so the exact forward alone uses about half of it.
"""

from __future__ import annotations

import psutil
import torch

from qgraph.errors import InputError

__all__ = [
    "available_memory_bytes",
    "check_qrce_memory",
    "qrce_memory_bytes",
    "qrce_memory_error",
]

#: complex (U, 2^q) buffers alive at the peak with autograd, besides the ⌈q/2⌉ that every
#: layer after the first saves for backward (one per two-qubit block): the Kronecker build of
#: the first layer, the state the read-out saves, |amplitude|², the gradients of backward
_GRAD_BUFFERS = 9
#: the same without autograd: a state, the next one, the probabilities, the sampler's counts
_NO_GRAD_BUFFERS = 6
#: bytes per basis state, whatever the tokens: the cached CNOT-ring gather index (int64) and
#: the transients of building it or the read-out signs (their 2q columns are counted apart)
_FIXED_BYTES_PER_STATE = 8 + 48
#: estimates below this are not checked at run time (reading the free memory costs ~20 µs)
_ALWAYS_FITS_BYTES = 64 << 20

_GIB = float(1 << 30)


def _check_count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"qrce_memory_bytes: {name} must be an int >= {low}; got {value!r}.")
    return value


def qrce_memory_bytes(
    n_tokens: int,
    n_qubits: int,
    n_layers: int,
    dtype: torch.dtype = torch.float32,
    *,
    requires_grad: bool = True,
) -> int:
    """Estimated peak bytes to simulate ``n_tokens`` QRCE circuits at once (an estimate).

    Args:
        n_tokens: circuits simulated together (distinct tokens of a call, or sample rows).
        n_qubits: q; each statevector holds 2^q complex amplitudes.
        n_layers: L; with autograd every layer after the first saves ⌈q/2⌉ states.
        dtype: the real dtype of the angles; float64 simulates in complex128 (16 bytes per
            amplitude), anything else in complex64 (8 bytes).
        requires_grad: True (default) if the simulation records autograd (training, the
            forward of a differentiable backend); False under ``torch.no_grad`` (inference,
            the shots backend, distillation).

    Returns:
        n_tokens · buffers · 2^q · amplitude bytes (buffers = (L − 1)·⌈q/2⌉ + 9 with
        autograd, 6 without) plus what does not depend on the tokens: the (2^q, 2q) read-out
        sign matrix and the CNOT-ring index with the transients of building them. Each extra
        qubit at least doubles it; it is affine in ``n_tokens``.
    """
    _check_count("n_tokens", n_tokens, 0)
    _check_count("n_qubits", n_qubits, 1)
    _check_count("n_layers", n_layers, 1)
    real_bytes = 8 if dtype == torch.float64 else 4
    states = 1 << n_qubits
    if requires_grad:
        buffers = (n_layers - 1) * ((n_qubits + 1) // 2) + _GRAD_BUFFERS
    else:
        buffers = _NO_GRAD_BUFFERS
    per_token = buffers * states * 2 * real_bytes
    fixed = states * (2 * n_qubits * real_bytes + _FIXED_BYTES_PER_STATE)
    return n_tokens * per_token + fixed


def available_memory_bytes(device: torch.device | str | None = None) -> int:
    """Bytes that can be allocated now: free GPU memory (plus what torch's caching allocator
    holds unused) for a CUDA device, otherwise ``psutil.virtual_memory().available``."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free) + int(cached)
    return int(psutil.virtual_memory().available)


def qrce_memory_error(
    n_tokens: int,
    n_qubits: int,
    n_layers: int,
    what: str,
    *,
    dtype: torch.dtype = torch.float32,
    requires_grad: bool = True,
    device: torch.device | str | None = None,
) -> str | None:
    """A message if simulating ``n_tokens`` QRCE circuits at once would not fit, else None.

    Compares ``qrce_memory_bytes(n_tokens, n_qubits, n_layers, dtype, requires_grad=...)``
    with ``available_memory_bytes(device)`` (host memory unless ``device`` is a CUDA
    device). ``what`` names the caller (e.g. ``"qgraph.compile(qrce_qubits=...)"``) and
    starts the message; the message names the qubits, layers and tokens, both sizes in GiB
    and the fix.
    """
    needed = qrce_memory_bytes(n_tokens, n_qubits, n_layers, dtype, requires_grad=requires_grad)
    available = available_memory_bytes(device)
    if needed <= available:
        return None
    where = "GPU" if torch.device(device or "cpu").type == "cuda" else "host"
    return (
        f"{what}: simulating the QRCE circuits of {n_tokens} token(s) at once on {n_qubits} "
        f"qubits and {n_layers} layer(s) needs an estimated {needed / _GIB:.3g} GiB, but only "
        f"{available / _GIB:.3g} GiB of {where} memory is available. Use fewer qrce_qubits "
        f"(each qubit doubles the memory), or fewer tokens simulated at once (memory grows "
        "linearly with them: smaller batches), or fewer qrce_layers."
    )


def check_qrce_memory(n_tokens: int, n_qubits: int, n_layers: int, *inputs: torch.Tensor) -> None:
    """Raise ``InputError`` if simulating ``n_tokens`` circuits of the QRCE kernel at once
    would not fit; dtype, device and autograd are read off the kernel's ``inputs``. Estimates
    under 64 MiB are not checked, so the check costs nothing on small calls."""
    dtype = torch.float64 if any(x.dtype == torch.float64 for x in inputs) else torch.float32
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in inputs)
    estimate = qrce_memory_bytes(n_tokens, n_qubits, n_layers, dtype, requires_grad=grad)
    if estimate < _ALWAYS_FITS_BYTES:
        return
    what = "QRCE kernel (qgraph.kernels.qrce)"
    device = inputs[0].device if inputs else None
    message = qrce_memory_error(
        n_tokens, n_qubits, n_layers, what, dtype=dtype, requires_grad=grad, device=device
    )
    if message is not None:
        raise InputError(message)
