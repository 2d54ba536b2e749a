"""The IBM backend's kernel rows as sampled gate-level circuits: which template, how a call's
rows become the parameter values of one pub, and how the shots are read out.

* QRCE: ``qgraph.circuits.qrce.qrce_template`` + ``measure_all``, transpiled once per
  structure and cached; every unique token of the call is one row of the parameter array of
  a single pub. ⟨Z_i⟩ and ⟨Z_i Z_{i+1}⟩ are shot averages of ±1 bit values.
* QRCE gradient ("parameter-shift"): a per-layer template (α of qubit i in layer l is its own
  parameter, so shifted circuits can move one layer's α), driven by
  ``qgraph.kernels.parameter_shift.token_parameter_shift``; all shifted circuits of a call
  in one job.
* QAAP: ``qgraph.circuits.templates.qaap_template(a, b)`` + ``measure_all``, transpiled once
  per register shape and cached (the data enter as rotation-tree angles); every
  (batch, head, query) instance of the call is one row of the parameter array of a single
  pub (``qaap_parameters``). Post-selection keeps shots with feature register (low b bits)
  = 0 and an index that is an unmasked key; noise outcomes on padded or masked keys are
  discarded, so QAAP never attends to a masked key. Rows with no kept shot fall back to
  uniform weights over the unmasked keys (counted), like the closed form does for rows that
  cannot post-select.

``IBMCircuitRows`` implements the row methods of ``QuantumFrontEnd`` on three methods a subclass
gives: ``_isa`` (a template's ISA circuit on a device, cached), ``_sample`` (run the pubs and
return their bits) and ``_check_width`` (refuse circuits wider than the devices).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector

from qgraph.backends.frontend import QAAPRows, QuantumFrontEnd
from qgraph.backends.ibm_jobs import Pub
from qgraph.backends.qiskit_shared import z_features
from qgraph.circuits.qaap import qaap_registers
from qgraph.circuits.qrce import qrce_template
from qgraph.circuits.templates import qaap_parameters, qaap_template, qrce_layer_template
from qgraph.kernels.qrce import QRCEStructure

__all__ = ["IBMCircuitRows"]


class IBMCircuitRows(QuantumFrontEnd):
    """QRCE and QAAP rows from circuits run by ``_sample`` (see the module docstring)."""

    #: shots per circuit
    shots: int

    @abstractmethod
    def _isa(
        self,
        key: tuple[Any, ...],
        build: Callable[[], tuple[QuantumCircuit, ParameterVector, ParameterVector]],
        device: str,
    ) -> tuple[QuantumCircuit, ParameterVector, ParameterVector]:
        """A template's ISA circuit for ``device`` (with ``measure_all``) and its two
        parameter vectors; ``build()`` makes the template."""

    @abstractmethod
    def _sample(
        self,
        kernel: str,
        site: str,
        rows: list[int],
        pubs_on: Callable[[str], Sequence[Pub]],
    ) -> list[np.ndarray]:
        """Run pubs of ``rows`` circuits each (``pubs_on(device)`` gives them for a device)
        and return each pub's bits (N, shots, c) in row order."""

    @abstractmethod
    def _check_width(self, n_qubits: int, what: str) -> None:
        """Raise ValueError when ``n_qubits`` exceed the devices (``what`` names the circuit)."""

    def _run_qrce(
        self,
        kernel: str,
        site: str,
        layer_angles: np.ndarray,
        layer_weights: np.ndarray,
        structure: QRCEStructure,
        per_layer: bool,
    ) -> np.ndarray:
        """(N, 2q) features of QRCE circuits with angles (N, L, q) and weights (N, L, q)."""
        q, n_layers = structure.n_qubits, structure.n_layers
        self._check_width(q, "QRCE")
        if per_layer:
            key, build = ("qrce-layers", structure), lambda: qrce_layer_template(structure)
            alpha_values = layer_angles.reshape(-1, n_layers * q)
        else:
            key, build = ("qrce", structure), lambda: qrce_template(structure)
            alpha_values = layer_angles[:, 0, :]
        theta_values = layer_weights.reshape(-1, n_layers * q)

        def pubs_on(device: str) -> list[Pub]:
            isa, alpha, theta = self._isa(key, build, device)
            # Transpilation keeps the template's Parameter objects; values go in the order of
            # isa.parameters (a parameter the transpiler removed is simply not asked for).
            columns = {p: alpha_values[:, i] for i, p in enumerate(alpha)}
            columns.update({p: theta_values[:, i] for i, p in enumerate(theta)})
            return [(isa, np.stack([columns[p] for p in isa.parameters], axis=-1))]

        (bits,) = self._sample(kernel, site, [alpha_values.shape[0]], pubs_on)
        return z_features(bits, q)

    def qrce_rows(
        self, angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure, site: str
    ) -> torch.Tensor:
        """Z and ZZ means over the shots of each distinct token's circuit."""
        angles_np = _numpy(angles)
        n_tokens, n_layers = angles_np.shape[0], structure.n_layers
        layer_angles = np.broadcast_to(
            angles_np[:, None, :], (n_tokens, n_layers, angles_np.shape[1])
        )
        layer_weights = np.broadcast_to(_numpy(weights), (n_tokens, *weights.shape))
        features = self._run_qrce("qrce", site, layer_angles, layer_weights, structure, False)
        return torch.from_numpy(features)

    def qrce_layer_rows(
        self,
        layer_angles: torch.Tensor,
        layer_weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
    ) -> torch.Tensor:
        """Features of the parameter-shifted circuits from the per-layer template, all
        submitted before any result is awaited (kernel "qrce-gradient")."""
        features = self._run_qrce(
            "qrce-gradient", site, _numpy(layer_angles), _numpy(layer_weights), structure, True
        )
        return torch.from_numpy(features)

    def qaap_rows(
        self, keys: torch.Tensor, queries: torch.Tensor, keep: torch.Tensor, site: str
    ) -> QAAPRows:
        """Post-selected counts per key of each query row's circuit (feature = 0, index an
        unmasked key); rows with P(feature = 0) = 0 exactly run no circuit."""
        *lead, n_queries, head_dim = queries.shape
        n_keys = keys.shape[-2]
        regs = qaap_registers(n_keys, head_dim)
        self._check_width(regs.n_qubits, f"QAAP ({n_keys} keys × {head_dim} dims)")
        keys_np = _numpy(keys).reshape(-1, n_keys, head_dim)
        queries_np = _numpy(queries).reshape(-1, head_dim)
        keep_np = keep.expand(*lead, n_queries, n_keys).reshape(-1, n_keys).cpu().numpy()
        n_rows = queries_np.shape[0]
        counts = np.zeros((n_rows, n_keys))
        # Nothing to encode (zero query or keys), or P(feature = 0) = ‖K q̂‖²/‖K‖² = 0: the
        # circuit could only post-select on noise.
        projections = np.einsum("rkd,rd->rk", keys_np[np.arange(n_rows) // n_queries], queries_np)
        circuit_rows = np.flatnonzero(np.any((projections != 0) & keep_np, axis=1))
        if circuit_rows.size:
            values = qaap_parameters(
                torch.from_numpy(keys_np[circuit_rows // n_queries]),
                torch.from_numpy(queries_np[circuit_rows]),
                torch.from_numpy(keep_np[circuit_rows]),
            )

            def pubs_on(device: str) -> list[Pub]:
                isa, key_params, query_params = self._isa(
                    ("qaap", regs.index_qubits, regs.feature_qubits),
                    lambda: qaap_template(regs.index_qubits, regs.feature_qubits, measure=False),
                    device,
                )
                # values go in the order of isa.parameters, as for QRCE
                columns = dict(zip((*key_params, *query_params), values.T, strict=True))
                return [(isa, np.stack([columns[p] for p in isa.parameters], axis=-1))]

            (bits,) = self._sample("qaap", site, [int(circuit_rows.size)], pubs_on)
            powers = 1 << np.arange(regs.n_qubits, dtype=np.int64)
            feature_mask = (1 << regs.feature_qubits) - 1
            for row_index, row_bits in zip(circuit_rows, bits, strict=True):
                outcome = row_bits.astype(np.int64) @ powers  # (shots,)
                index = outcome >> regs.feature_qubits
                kept = ((outcome & feature_mask) == 0) & (index < n_keys)
                found = np.bincount(index[kept], minlength=n_keys)[:n_keys]
                counts[row_index] = found * keep_np[row_index]
        scores = torch.from_numpy(counts).reshape(*lead, n_queries, n_keys)
        return QAAPRows(scores, float(self.shots), scores.sum(-1).round().to(torch.int64))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A float64 numpy copy of a tensor (detached, on the CPU)."""
    return tensor.detach().to("cpu", torch.float64).numpy()
