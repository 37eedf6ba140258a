"""Every test runs with WANDB_MODE=offline and temporary directories for wandb, Hydra outputs and
optuna storages; nothing reaches the network. Helpers live in tests/helpers/."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    (tmp_path / "wandb").mkdir(exist_ok=True)
