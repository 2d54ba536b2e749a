"""QRCEEmbedding: initialisation, distillation from a trained table."""

from __future__ import annotations

import math

import torch

from qgraph.kernels.qrce import qrce_features
from qgraph.layers import QRCEEmbedding


def _low_rank_table(vocab: int, width: int, rank: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(vocab, rank, generator=generator) @ torch.randn(
        rank, width, generator=generator
    )


def test_random_init_is_seeded_and_sized() -> None:
    a, b = QRCEEmbedding(50, 12, 4, 2, seed=3), QRCEEmbedding(50, 12, 4, 2, seed=3)
    assert torch.equal(a.angles, b.angles) and a.angles.shape == (50, 4)
    assert a.weights.shape == (2, 4) and a.proj.in_features == 8 and a.proj.out_features == 12
    assert not torch.equal(a.angles, QRCEEmbedding(50, 12, 4, 2, seed=4).angles)


def test_distillation_is_a_least_squares_fit_bounded_by_pca() -> None:
    table = _low_rank_table(300, 24, rank=3)
    layer = QRCEEmbedding(300, 24, 4, 2, seed=0)
    r2 = layer.distill_from(table)
    assert layer.best_rank_r2 is not None and layer.best_rank_r2 > 0.999  # rank 3 ≤ 2q = 8
    assert 0.0 < r2 <= layer.best_rank_r2 + 1e-6
    assert torch.all(layer.angles.abs() < math.pi / 2)
    # The projection is the least-squares fit, scaled to the table's spread about its mean.
    with torch.no_grad():
        features = qrce_features(layer.angles, layer.weights, layer.structure)
        design = torch.cat([features, torch.ones(len(features), 1)], dim=1).double()
        least_squares = design @ torch.linalg.lstsq(design, table.double()).solution
        ours = layer.proj(features).double()
        centred_ls = least_squares - least_squares.mean(dim=0)
        centred_ours = ours - ours.mean(dim=0)
        scale = float(centred_ours.norm() / centred_ls.norm())
        assert scale > 1.0  # least squares shrinks; the read-out is scaled back up
        torch.testing.assert_close(centred_ours, scale * centred_ls, atol=1e-3, rtol=1e-3)
        centred_table = table.double() - table.double().mean(dim=0)
        torch.testing.assert_close(centred_ours.norm(), centred_table.norm(), rtol=1e-3, atol=0)
        torch.testing.assert_close(ours.mean(dim=0), table.double().mean(dim=0), atol=1e-3, rtol=0)


def test_distillation_beats_random_init() -> None:
    table = _low_rank_table(300, 24, rank=3)
    distilled, random_init = QRCEEmbedding(300, 24, 4, 2, seed=0), QRCEEmbedding(300, 24, 4, 2, 0)
    distilled.distill_from(table)
    with torch.no_grad():
        errors = [
            (table - layer.proj(qrce_features(layer.angles, layer.weights, layer.structure)))
            .square()
            .mean()
            for layer in (distilled, random_init)
        ]
    assert errors[0] < errors[1]
