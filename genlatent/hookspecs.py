"""Hook specifications that genlatent plugins implement.

Each hook receives a ``register`` callback and calls it once per object it
contributes. A plugin is any module or object with functions marked
``@genlatent.hookimpl`` and exposed through the ``genlatent`` entry-point group,
for example in a plugin's ``pyproject.toml``::

    [project.entry-points.genlatent]
    my_plugin = "my_package.plugin"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("genlatent")
hookimpl = pluggy.HookimplMarker("genlatent")

Register = Callable[[Any], None]


@hookspec
def register_models(register: Register) -> None:
    """Register models, named trainer factories (genlatent.models.Model instances)."""


@hookspec
def register_experiments(register: Register) -> None:
    """Register named, fully configured experiments (genlatent.ExperimentConfig)."""


@hookspec
def register_architectures(register: Register) -> None:
    """Register network architectures (genlatent.nn.Architecture subclasses)."""


@hookspec
def register_regularizers(register: Register) -> None:
    """Register regularizer classes (genlatent.regularizers.Regularizer subclasses)."""


@hookspec
def register_adversarial_losses(register: Register) -> None:
    """Register adversarial losses (genlatent.losses.AdversarialLoss instances)."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register image data sets (genlatent.data.DatasetSource instances)."""


@hookspec
def register_latent_codes(register: Register) -> None:
    """Register latent code kinds (genlatent.latent.LatentCode subclasses)."""
