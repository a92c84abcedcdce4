"""genlatent: generative models with interpretable latent codes, for PyTorch."""

import importlib.metadata

from genlatent.config import ExperimentConfig
from genlatent.errors import GenlatentError
from genlatent.hookspecs import hookimpl
from genlatent.inspection import (
    LoadedRun,
    load_run,
    predict_codes,
    sample,
    traverse,
)
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
    "LoadedRun",
    "NoiseCode",
    "RunResult",
    "hookimpl",
    "load_plugins",
    "load_run",
    "predict_codes",
    "resolve_config",
    "run_experiment",
    "sample",
    "traverse",
]
