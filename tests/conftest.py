"""Shared fixtures: the model panel of the foundation issue."""

from __future__ import annotations

import pytest
import torch

from panel import PANEL
from qgraph.models import ModelCase

torch.manual_seed(0)


@pytest.fixture(params=list(PANEL), scope="module")
def case(request: pytest.FixtureRequest) -> ModelCase:
    return PANEL[request.param]()
