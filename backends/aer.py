"""The Aer backend: QAAP and QRCE as real gate-level circuits on qiskit-aer.

Every op call is one job per ``max_circuits_per_job`` instances: the kernel's template
(``qgraph.circuits.templates``) is transpiled once per (kernel, shape, target) and bound to a
parameter array of shape (N, n_params) in a single primitive call (SamplerV2 for shots,
EstimatorV2 with precision 0 or saved probabilities for the exact mode).

* ``shots=None``: exact, noiseless. QAAP reads the probabilities Aer saves for each
  instance; QRCE asks EstimatorV2 (precision 0) for the 2q expectation values. Used to
  cross-check the gate-level circuits against the closed forms.
* ``shots=S``: SamplerV2 with S shots per circuit, seeded (each job draws its own seed from
  a generator seeded with ``seed``, so calls are reproducible but not identical).
  QAAP post-selects feature = 0 (and, under noise, an unmasked key index: outcomes of
  zero ideal amplitude carry no information); QRCE averages ±1 eigenvalues of Z_i and
  Z_iZ_{i+1} over the shots.
* ``noise="fake_<name>"``: a NoiseModel from qiskit-ibm-runtime's fake backend of that
  name, and the templates are transpiled to that backend's target (its basis gates and
  coupling map). Needs ``pip install 'qgraph[ibm]'``.

Degenerate QAAP rows (zero-norm query or all-zero unmasked keys: not encodable; no
unmasked key: empty) never go to the simulator: they fall back to uniform weights over the
unmasked keys or output zero, as the closed form does, and are counted per site.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from qiskit_aer import AerSimulator  # a missing extra surfaces as ModuleNotFoundError
from qiskit_aer.noise import NoiseModel
from qiskit_aer.primitives import EstimatorV2, SamplerV2

from qgraph.backends.base import BackendStats, Capabilities, ExecutionRecord
from qgraph.backends.frontend import QAAPRows, QuantumFrontEnd
from qgraph.backends.qiskit_shared import (
    fake_backend,
    fake_backend_names,
    job_chunks,
    z_features,
)
from qgraph.circuits.qrce import qrce_observables
from qgraph.circuits.templates import (
    qaap_parameters,
    qaap_template,
    qrce_layer_parameters,
    qrce_layer_template,
    transpiled,
)
from qgraph.kernels.qaap import qaap_register_sizes
from qgraph.kernels.qrce import QRCEStructure

__all__ = ["METHODS", "AerBackend", "fake_backend", "fake_backend_names"]  # lookup re-exported

#: simulation methods the backend accepts (Aer's names)
METHODS: tuple[str, ...] = ("statevector", "density_matrix", "matrix_product_state")


def _bits_to_ints(bits: np.ndarray) -> np.ndarray:
    """BitArray bytes (..., shots, n_bytes), big-endian → integer outcomes (..., shots)."""
    n_bytes = bits.shape[-1]
    out = np.zeros(bits.shape[:-1], dtype=np.int64)
    for byte in range(n_bytes):
        out = (out << 8) | bits[..., byte].astype(np.int64)
    return out


class AerBackend(QuantumFrontEnd):
    """Gate-level QAAP and QRCE on qiskit-aer, one job per op call (chunked)."""

    name = "aer"

    def __init__(
        self,
        method: str = "statevector",
        shots: int | None = 1024,
        noise: str | None = None,
        seed: int = 0,
        max_circuits_per_job: int = 4096,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown Aer method {method!r}; use one of {list(METHODS)}.")
        if shots is not None and (
            isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1
        ):
            raise ValueError(f"shots must be a positive int or None (exact); got {shots!r}.")
        if (
            isinstance(max_circuits_per_job, bool)
            or not isinstance(max_circuits_per_job, (int, np.integer))
            or max_circuits_per_job < 1
        ):
            raise ValueError(
                f"max_circuits_per_job must be a positive int; got {max_circuits_per_job!r}."
            )
        if shots is None and noise is not None:
            raise ValueError(
                "shots=None is the exact, noiseless mode; a noise model needs shots "
                f"(got noise={noise!r}). Pass shots=1024, for example."
            )
        self.method = method
        self.shots = None if shots is None else int(shots)
        self.noise = noise
        self.seed = int(seed)
        self.max_circuits_per_job = int(max_circuits_per_job)
        self._rng = np.random.default_rng(self.seed)
        self.stats = BackendStats()

        if noise is not None:
            try:
                device = fake_backend(noise)
            except ValueError as exc:
                raise ValueError(f"AerBackend(noise={noise!r}): {exc}") from None
            self._simulator = AerSimulator(
                method=method, noise_model=NoiseModel.from_backend(device)
            )
            self._target = device  # templates are transpiled to the device's target
            max_qubits = min(int(device.num_qubits), int(self._simulator.num_qubits))
        else:
            self._simulator = AerSimulator(method=method)
            self._target = self._simulator
            max_qubits = int(self._simulator.num_qubits)
        self.capabilities = Capabilities(
            exact=self.shots is None,
            max_qubits=max_qubits,
            max_circuits_per_job=self.max_circuits_per_job,
            gradient_methods=("parameter-shift", "straight-through", "spsa"),
            needs_transpilation=True,
        )

    # ------------------------------------------------------------------ plumbing

    def _chunks(self, n_rows: int) -> list[slice]:
        return [
            slice(start, stop)
            for ((_, start, stop),) in job_chunks([n_rows], self.max_circuits_per_job)
        ]

    def _record(self, kernel: str, site: str, circuits: int, wall_s: float, received: int) -> None:
        self.stats.records.append(
            ExecutionRecord(
                kernel=kernel,
                site=site,
                circuits=circuits,
                shots=0 if self.shots is None else circuits * self.shots,
                wall_s=wall_s,
                bytes_received=received,
            )
        )

    def _check_qubits(self, needed: int, what: str) -> None:
        available = self.capabilities.max_qubits
        if available is not None and needed > available:
            target = self.noise or f"aer {self.method}"
            raise ValueError(
                f"{what} needs {needed} qubits but {target} has {available} available; "
                "use smaller shapes, method='matrix_product_state', or another backend."
            )

    def _sample(self, circuit: Any, params: tuple[Any, ...], values: np.ndarray) -> np.ndarray:
        """One SamplerV2 job: integer outcomes (N, shots) of register "meas"."""
        job_seed = int(self._rng.integers(2**31 - 1))
        sampler = SamplerV2.from_backend(self._simulator, seed=job_seed, default_shots=self.shots)
        result = sampler.run([(circuit, {params: values})]).result()
        bits = result[0].data.meas.array  # (N, shots, n_bytes) uint8
        return _bits_to_ints(np.asarray(bits))

    # ------------------------------------------------------------------ QAAP

    def _qaap_joint(
        self, a: int, b: int, values: np.ndarray, keep_padded: np.ndarray, site: str
    ) -> np.ndarray:
        """P(index = j, feature = 0) (exact) or its counts, (N, 2^a); one job per chunk."""
        exact = self.shots is None
        circuit, key_params, query_params = qaap_template(a, b, measure=not exact)
        params = (*key_params, *query_params)
        isa = transpiled(("qaap", a, b, not exact), circuit, self._target, seed=self.seed)
        out = np.zeros((values.shape[0], 1 << a))
        for chunk in self._chunks(values.shape[0]):
            start = time.perf_counter()
            rows = values[chunk]
            if exact:
                probe = isa.copy()
                probe.save_probabilities()
                binds = [{p: rows[:, col] for col, p in enumerate(params)}]
                result = self._simulator.run(probe, parameter_binds=binds).result()
                probs = np.stack(
                    [np.asarray(result.data(i)["probabilities"]) for i in range(rows.shape[0])]
                )
                received = probs.nbytes
                joint = probs.reshape(rows.shape[0], 1 << a, 1 << b)[:, :, 0]
            else:
                outcomes = self._sample(isa, params, rows)
                received = outcomes.shape[0] * outcomes.shape[1] * ((a + b + 7) // 8)
                feature = outcomes & ((1 << b) - 1)
                index = outcomes >> b
                n_rows = rows.shape[0]
                flat = np.arange(n_rows)[:, None] * (1 << a) + index
                joint = np.bincount(flat[feature == 0], minlength=n_rows << a).reshape(n_rows, -1)
                joint = joint.astype(np.float64)
            out[chunk] = joint * keep_padded[chunk]
            self._record("qaap", site, rows.shape[0], time.perf_counter() - start, received)
        return out

    def qaap_rows(
        self, keys: torch.Tensor, queries: torch.Tensor, keep: torch.Tensor, site: str
    ) -> QAAPRows:
        """P(index = j, feature = 0) of every query row's circuit (exact mode), or its
        post-selected counts; rows with nothing to encode run no circuit."""
        *lead, n_queries, head_dim = queries.shape
        n_keys = keys.shape[-2]
        keys = keys.reshape(-1, n_keys, head_dim)
        n_groups = keys.shape[0]
        keep = keep.expand(*lead, n_queries, n_keys)
        a, b = qaap_register_sizes(n_keys, head_dim)
        self._check_qubits(a + b, f"QAAP with {n_keys} keys of width {head_dim}")
        n_rows = n_groups * n_queries
        keep_rows = keep.reshape(n_rows, n_keys).cpu()
        q_rows = queries.reshape(n_rows, head_dim).to("cpu", torch.float64)
        k_rows = (
            keys.to("cpu", torch.float64)[:, None]
            .expand(n_groups, n_queries, n_keys, head_dim)
            .reshape(n_rows, n_keys, head_dim)
        ) * keep_rows[:, :, None]
        runnable = (q_rows.norm(dim=1) > 0) & (k_rows.flatten(1).norm(dim=1) > 0)

        scores = torch.zeros(n_rows, n_keys, dtype=torch.float64)
        rows = runnable.nonzero().flatten()
        if rows.numel() > 0:
            values = qaap_parameters(k_rows[rows], q_rows[rows])
            keep_padded = np.zeros((rows.numel(), 1 << a))
            keep_padded[:, :n_keys] = keep_rows[rows].numpy()
            joint = torch.from_numpy(self._qaap_joint(a, b, values, keep_padded, site))
            scores[rows] = joint[:, :n_keys]
        scores = scores.reshape(*lead, n_queries, n_keys)
        if self.shots is None:
            return QAAPRows(scores, 1.0)
        kept = scores.sum(-1).round().to(torch.int64)
        return QAAPRows(scores, float(self.shots), kept)

    # ------------------------------------------------------------------ QRCE

    def _qrce_evaluate(
        self,
        layer_angles: torch.Tensor,
        layer_weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
        kernel: str,
    ) -> torch.Tensor:
        """Features (N, 2q) float64 of N circuits with per-layer angles, one job per chunk."""
        q = structure.n_qubits
        self._check_qubits(q, f"QRCE with {q} qubits")
        exact = self.shots is None
        circuit, alpha, theta = qrce_layer_template(structure, measure=not exact)
        params = (*alpha, *theta)
        isa = transpiled(("qrce", structure, not exact), circuit, self._target, seed=self.seed)
        values = qrce_layer_parameters(layer_angles, layer_weights)
        out = np.zeros((values.shape[0], 2 * q))
        if exact:
            observables = [obs.apply_layout(isa.layout) for obs in qrce_observables(structure)]
            estimator = EstimatorV2.from_backend(
                self._simulator, options={"default_precision": 0.0}
            )
        for chunk in self._chunks(values.shape[0]):
            start = time.perf_counter()
            rows = values[chunk]
            if exact:
                pub = (isa, observables, {params: rows[:, None, :]})
                evs = np.asarray(estimator.run([pub]).result()[0].data.evs)  # (N, 2q)
                out[chunk] = evs
                received = evs.nbytes
            else:
                outcomes = self._sample(isa, params, rows)  # (N, shots)
                bits = ((outcomes[:, :, None] >> np.arange(q)) & 1).astype(np.int8)
                out[chunk] = z_features(bits, q)
                received = outcomes.shape[0] * outcomes.shape[1] * ((q + 7) // 8)
            self._record(kernel, site, rows.shape[0], time.perf_counter() - start, received)
        return torch.from_numpy(out)

    def qrce_rows(
        self, angles: torch.Tensor, weights: torch.Tensor, structure: QRCEStructure, site: str
    ) -> torch.Tensor:
        """Features of each distinct token's circuit, one job per chunk."""
        n_tokens, (n_layers, q) = angles.shape[0], weights.shape
        layer_angles = angles[:, None, :].expand(n_tokens, n_layers, q)
        layer_weights = weights[None].expand(n_tokens, n_layers, q)
        return self._qrce_evaluate(layer_angles, layer_weights, structure, site, "qrce")

    def qrce_layer_rows(
        self,
        layer_angles: torch.Tensor,
        layer_weights: torch.Tensor,
        structure: QRCEStructure,
        site: str,
    ) -> torch.Tensor:
        """Features of the parameter-shifted circuits (kernel "qrce-gradient")."""
        return self._qrce_evaluate(layer_angles, layer_weights, structure, site, "qrce-gradient")

    def __repr__(self) -> str:
        return (
            f"AerBackend(method={self.method!r}, shots={self.shots!r}, noise={self.noise!r}, "
            f"seed={self.seed}, max_circuits_per_job={self.max_circuits_per_job})"
        )
