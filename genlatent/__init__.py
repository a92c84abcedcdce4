"""genlatent: generative models with interpretable latent codes, for PyTorch."""

import importlib.metadata

from genlatent.config import ExperimentConfig
from genlatent.errors import GenlatentError
from genlatent.hookspecs import hookimpl
from genlatent.latent import (
    CategoricalCode,
    ContinuousCode,
    LatentCode,
    LatentSpec,
    NoiseCode,
)
from genlatent.plugins import load_plugins
from genlatent.run import RunResult, resolve_config, run_experiment

__version__ = importlib.metadata.version("genlatent")

__all__ = [
    "CategoricalCode",
    "ContinuousCode",
    "ExperimentConfig",
    "GenlatentError",
    "LatentCode",
    "LatentSpec",
    "NoiseCode",
    "RunResult",
    "hookimpl",
    "load_plugins",
    "resolve_config",
    "run_experiment",
]
