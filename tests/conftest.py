"""Shared fixtures: an isolated environment and the real Fashion-MNIST files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

requires_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST.is_dir(),
    reason="needs Fashion-MNIST: apt-get install dataset-fashion-mnist",
)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """A cache folder shared by the session, so archives are extracted once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, session_cache):
    # No test downloads anything or reads the developer's plugin, data or
    # wandb settings.
    monkeypatch.setenv("GENLATENT_NO_DOWNLOAD", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(session_cache))
    for name in (
        "GENLATENT_DISABLE_PLUGINS",
        "GENLATENT_STRICT_PLUGINS",
        "GENLATENT_DATA",
    ):
        monkeypatch.delenv(name, raising=False)
    for name in [key for key in os.environ if key.startswith("WANDB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("WANDB_SILENT", "true")
