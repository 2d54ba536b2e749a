"""The trainable modules behind quantum sites, owned by the rewritten GraphModule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from qgraph.errors import InputError
from qgraph.kernels.memory import qrce_memory_error
from qgraph.kernels.qrce import QRCEStructure, qrce_features

#: distillation fits the PCA and the projection on a seeded sample of this many table rows
DISTILL_SAMPLE_ROWS = 4096


@dataclass(frozen=True)
class QRCEOptions:
    """Size and initialisation of the QRCE circuits that replace embedding tables."""

    qubits: int
    layers: int
    init: str  # "distill" (fit to the replaced table) or "random"


class QRCEEmbedding(nn.Module):
    """Parameters of one QRCE site: token angles (V, q), circuit weights (L, q), projection.

    The graph calls ``qgraph::qrce`` on ``angles`` and ``weights`` and then the classical
    ``proj`` (Linear(2q, d)) on the read-out, so the quantum part and the classical part stay
    separate nodes.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        n_qubits: int,
        n_layers: int,
        seed: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.structure = QRCEStructure.from_seed(n_qubits, n_layers, seed)
        generator = torch.Generator().manual_seed(seed)
        self.angles = nn.Parameter(
            (torch.rand(vocab_size, n_qubits, generator=generator) * 2 - 1) * math.pi
        )
        self.weights = nn.Parameter(
            (torch.rand(n_layers, n_qubits, generator=generator) * 2 - 1) * math.pi
        )
        # nn.Linear's own init would draw from the global RNG; draw from the seeded one.
        with torch.random.fork_rng(devices=[]):
            self.proj = nn.Linear(2 * n_qubits, embed_dim)
        bound = 1.0 / math.sqrt(2 * n_qubits)
        with torch.no_grad():
            self.proj.weight.uniform_(-bound, bound, generator=generator)
            self.proj.bias.uniform_(-bound, bound, generator=generator)
        self.to(device=device, dtype=dtype)
        self.fit_r2: float | None = None
        self.best_rank_r2: float | None = None

    @property
    def seed(self) -> int:
        return self.structure.seed

    @torch.no_grad()
    def distill_from(self, table: torch.Tensor) -> float:
        """Initialise from a trained embedding table; returns the fit's R².

        Angles: every token's scores on the table's top-q principal components, standardised
        and squashed into (-π/2, π/2); weights small; projection: least squares from the
        circuit's read-out to the table rows. PCA, fit and R² use a seeded sample of
        ``DISTILL_SAMPLE_ROWS`` rows (all rows of a smaller table). The model starts from the
        best linear read-out of the circuit rather than from noise; how much of the table that
        recovers is the returned R² (on all-MiniLM-L6-v2 it is small: 16 features of an
        8-qubit circuit cannot carry a 384-wide table; the report prints the bound a rank-2q
        map could reach). The projection is then scaled so its rows spread as much as the
        table's (R² is that of the unscaled fit).

        Raises ``InputError`` before changing anything if simulating the sample's circuits
        at once would not fit in the memory available (``qrce_memory_error``).
        """
        problem = qrce_memory_error(
            min(len(table), DISTILL_SAMPLE_ROWS),
            self.structure.n_qubits,
            self.structure.n_layers,
            "QRCE distillation (QRCEEmbedding.distill_from)",
            requires_grad=False,
            device=self.angles.device,
        )
        if problem is not None:
            raise InputError(problem)
        table = table.detach().to(torch.float32)
        generator = torch.Generator().manual_seed(self.seed)
        sample = torch.randperm(len(table), generator=generator)[:DISTILL_SAMPLE_ROWS]
        sample = sample.to(table.device)
        work = table[sample]
        mean = work.mean(dim=0)
        centred = work - mean
        q = self.structure.n_qubits
        # PCA from the d×d covariance: far cheaper than an SVD of the table.
        covariance = (centred.T @ centred).to(torch.float64)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
        components = eigenvectors[:, :q].to(torch.float32)
        scale = (centred @ components).std(dim=0).clamp_min(1e-12)
        self.angles.copy_(torch.atan(((table - mean) @ components) / scale))
        self.weights.mul_(0.1)
        features = qrce_features(self.angles[sample].float(), self.weights.float(), self.structure)
        design = torch.cat([features, torch.ones(len(features), 1)], dim=1)
        # Least squares through the (2q+1)² normal equations, solved in float64.
        gram = (design.T @ design).to(torch.float64)
        solution = torch.linalg.lstsq(gram, (design.T @ work).to(torch.float64)).solution
        residual = work - design @ solution.to(torch.float32)
        total = float(eigenvalues.sum())
        r2 = 1.0 - float(residual.to(torch.float64).square().sum()) / total
        # Least squares shrinks the fit towards the mean row by √R² (to almost nothing for a
        # random table). Scale the read-out back to the table's spread, so the token signal
        # keeps its weight against the position and type embeddings it is summed with before
        # LayerNorm: unscaled, a from-scratch model's QRCE arm never left chance.
        weight = solution[:-1].to(torch.float32)
        fitted = (features - features.mean(dim=0)) @ weight
        weight = weight * (centred.square().sum() / fitted.square().sum().clamp_min(1e-24)).sqrt()
        self.proj.weight.copy_(weight.T)
        self.proj.bias.copy_(mean - features.mean(dim=0) @ weight)
        # No map from 2q features can beat the table's best rank-2q approximation (PCA).
        self.fit_r2 = r2
        self.best_rank_r2 = float(eigenvalues[: 2 * q].sum()) / total
        return r2

    def extra_repr(self) -> str:
        s = self.structure
        return (
            f"vocab={self.angles.shape[0]}, qubits={s.n_qubits}, layers={s.n_layers}, seed={s.seed}"
        )
