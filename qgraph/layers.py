"""The trainable modules behind quantum sites, owned by the rewritten GraphModule."""

from __future__ import annotations

import math

import torch
from torch import nn

from qgraph.kernels.qrce import QRCEStructure, qrce_features


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
        self.proj = nn.Linear(2 * n_qubits, embed_dim)
        self.to(device=device, dtype=dtype)
        self.fit_r2: float | None = None

    @property
    def seed(self) -> int:
        return self.structure.seed

    @torch.no_grad()
    def distill_from(self, table: torch.Tensor) -> float:
        """Initialise from a trained embedding table; returns the fit's R².

        Angles: the table's top-q principal components, standardised and squashed into
        (-π/2, π/2); weights small; projection: least squares from the circuit's read-out to
        the table rows. A pretrained model then starts near its original embedding.
        """
        work = table.detach().to(torch.float64)
        centred = work - work.mean(dim=0)
        q = self.structure.n_qubits
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        scores = centred @ v[:q].T
        scores = scores / scores.std(dim=0).clamp_min(1e-12)
        self.angles.copy_(torch.atan(scores))
        self.weights.mul_(0.1)
        features = qrce_features(
            self.angles.to(torch.float64), self.weights.to(torch.float64), self.structure
        )
        design = torch.cat([features, torch.ones(len(features), 1, dtype=torch.float64)], dim=1)
        solution = torch.linalg.lstsq(design, work).solution
        self.proj.weight.copy_(solution[:-1].T)
        self.proj.bias.copy_(solution[-1])
        residual = work - design @ solution
        r2 = 1.0 - float(residual.square().sum() / centred.square().sum())
        self.fit_r2 = r2
        return r2

    def extra_repr(self) -> str:
        s = self.structure
        return (
            f"vocab={self.angles.shape[0]}, qubits={s.n_qubits}, layers={s.n_layers}, seed={s.seed}"
        )
