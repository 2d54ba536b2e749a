"""Memory estimates for the QRCE statevector simulation, checked before anything is allocated.

``qgraph.kernels.qrce`` simulates U token circuits at once, each a 2^q complex statevector,
so memory doubles with every qubit and grows linearly with the tokens simulated together.
``qrce_memory_bytes`` estimates the peak; ``qrce_memory_error`` compares it with the memory
available now and returns a message saying what to change, or None. The numbers are
estimates, meant to refuse settings that cannot fit, not to budget memory to the byte.

The estimate counts what the simulators allocate (``qgraph.kernels.qrce_shared`` for
``qrce_features`` / ``qrce_probabilities``, ``qgraph.kernels.qrce_adjoint`` for the
per-layer variants of the parameter-shift circuits), buffer by buffer at the moment of the
peak (the constants below say which), taking the larger of the two simulators wherever they
differ. Checked against the CPU allocator's peak (``torch.profiler`` memory events; one case
is measured in ``tests/test_memory_limits.py``) for q = 8..16, U = 1..1024, L = 1..5,
float32 and float64, first calls (which build the cached bit masks, read-out signs and CNOT
ring) and later ones, never below it: with autograd, forward and backward of the shared
simulator, 1.0–1.5 times the peak from 4 tokens up and at most 2.7 times for 1–2 tokens
(the per-layer simulator keeps half the states: 1.2–3.7 times); without autograd 1.1–3.6
times from 4 tokens up (the estimate also covers the shots backend's sampling of the
read-out). One token of 20 qubits and 3 layers peaked at 920 MiB on a first call (the bit
masks are built in int64) and 364 MiB after, four tokens at 1,256 and 832 MiB; the estimates
are 980 and 1,472 MiB.
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

# Per token, in (2^q,) buffers: complex ones hold two reals (complex64 for float32 angles,
# complex128 for float64). The peak with autograd is in the backward's first layer; without,
# in the forward's layer loop.
#
#: with autograd, per layer: the block input and output that ``qrce_shared`` keeps for its
#: adjoint backward (both simulators turn ``set_materialize_grads`` off, so the autograd
#: engine fills no zero gradients for these kept outputs; measured 12.9 states per token at
#: 3 layers against 19.9 with them). Counted at the older 4 per layer, a safe margin.
_GRAD_STATES_PER_LAYER = 4
#: with autograd, besides: the re-upload phases Φ; in the backward the adjoint λ, conj(Φ),
#: the α-gradient accumulator and the two transients of a qubit-block matrix product, and a
#: margin of one
_GRAD_STATES = 7
#: real ones with autograd: ∂L/∂p gathered into basis order, and for ``qrce_probabilities``
#: its (U, 2^q) output and the gradient that comes back for it
_GRAD_REALS = 3
#: without autograd: the per-layer simulator's peak, five states (an unused keep buffer, the
#: state, its ring-permuted copy, a gate's output and two half-state products); the shared
#: simulator peaks at four (Φ, the state, two block-product transients)
_NO_GRAD_STATES = 5
#: real ones without autograd: a margin for the probabilities, which outlive the states (the
#: shots backend's sampling then holds them and an int64 count per basis state: less than the
#: simulation's peak)
_NO_GRAD_REALS = 1

# Per basis state, whatever the tokens. With autograd the larger of two moments counts: the
# backward's first layer, and its start on a first call, when the cached bit masks are built.
#
#: complex entries at the backward's first layer: ``torch.matmul`` materialises the conjugate
#: of the first qubit block's (2^k, 2^k) matrix once per 2^k rows of the state (k ≤ 4,
#: ``qrce_shared._MAX_BLOCK_QUBITS``)
_BACKWARD_COMPLEX_PER_STATE = 16
#: real entries per qubit then: the cached read-out signs (2q columns) and bit masks (2q
#: rows), and the backward's (bit − ½) signs (q)
_BACKWARD_REALS_PER_QUBIT = 5
#: bytes per qubit of building the bit masks on a first call (int64: the bits, their
#: complement and the stacked pair), besides the read-out signs (2q reals) then
_MASK_BUILD_BYTES_PER_QUBIT = 32
#: real entries per qubit without autograd: the read-out signs and their ring-ordered copy
_FORWARD_REALS_PER_QUBIT = 4
#: bytes: the cached CNOT ring and its inverse (int64 each), and the numpy transients of
#: building them (the transients only on a first call, before anything else is allocated)
_RING_BYTES = 16
_RING_BUILD_BYTES = 40

# What grows with neither the tokens' states nor 2^q, which matters only for small circuits.
#
#: copies of each layer's qubit-block matrices (≤ 16 × 16 complex entries per block of ≤ 4
#: qubits): K_l in the simulation dtype, in complex128 while it is built, and conjugated in
#: the backward (one more for the margin)
_BLOCK_MATRIX_COPIES = 4
#: bytes for the rest: angles, weights and their gradients, Pauli generators, the (U, 2q)
#: features, allocator rounding
_SMALL_BYTES = 64 << 10
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
        n_layers: L; with autograd the forward keeps 2 states per layer for the backward.
        dtype: the real dtype of the angles; float64 simulates in complex128 (16 bytes per
            amplitude), anything else in complex64 (8 bytes).
        requires_grad: True (default) if the simulation records autograd (training, the
            forward of a differentiable backend); False under ``torch.no_grad`` (inference,
            the shots backend, distillation).

    Returns:
        n_tokens · 2^q · (states · amplitude bytes + reals · real bytes), with
        (states, reals) = (4L + 7, 3) with autograd and (5, 1) without, plus 2^q times what
        does not depend on the tokens: with autograd the larger of 16 amplitudes + 5q reals
        + 16 bytes and 2q reals + 32q + 16 bytes, without 4q reals + 56 bytes, plus what
        grows with neither (qubit-block matrices, 64 KiB for the rest); the module's
        constants say which buffers these are. Each extra qubit at least doubles all but the
        last part; it is affine in ``n_tokens``.
    """
    _check_count("n_tokens", n_tokens, 0)
    _check_count("n_qubits", n_qubits, 1)
    _check_count("n_layers", n_layers, 1)
    real_bytes = 8 if dtype == torch.float64 else 4
    amplitude_bytes = 2 * real_bytes
    if requires_grad:
        complex_buffers = _GRAD_STATES_PER_LAYER * n_layers + _GRAD_STATES
        real_buffers = _GRAD_REALS
        # the larger of the two moments' fixed parts with the larger per-token part: affine in
        # the tokens, and above both moments' totals
        at_first_layer = (
            _BACKWARD_COMPLEX_PER_STATE * amplitude_bytes
            + _BACKWARD_REALS_PER_QUBIT * n_qubits * real_bytes
            + _RING_BYTES
        )
        at_mask_build = (
            2 * n_qubits * real_bytes + _MASK_BUILD_BYTES_PER_QUBIT * n_qubits + _RING_BYTES
        )
        fixed_per_state = max(at_first_layer, at_mask_build)
    else:
        complex_buffers, real_buffers = _NO_GRAD_STATES, _NO_GRAD_REALS
        fixed_per_state = (
            _FORWARD_REALS_PER_QUBIT * n_qubits * real_bytes + _RING_BYTES + _RING_BUILD_BYTES
        )
    states = 1 << n_qubits
    per_token = states * (complex_buffers * amplitude_bytes + real_buffers * real_bytes)
    blocks = -(-n_qubits // 4)  # qrce_shared.block_sizes: ⌈q/4⌉ blocks of ≤ 4 qubits
    small = _BLOCK_MATRIX_COPIES * n_layers * blocks * 256 * amplitude_bytes + _SMALL_BYTES
    return n_tokens * per_token + states * fixed_per_state + small


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
