"""Entry point of the InfoGAN plugin: registers its regularizer, networks and
experiments with genlatent."""

from __future__ import annotations

from genlatent.hookspecs import Register, hookimpl
from genlatent_infogan.experiments import experiments
from genlatent_infogan.mutual_information import MutualInformation
from genlatent_infogan.networks import (
    CelebANetworks,
    ChairsNetworks,
    FacesNetworks,
    MNISTNetworks,
    SVHNNetworks,
)


@hookimpl
def register_regularizers(register: Register) -> None:
    register(MutualInformation)


@hookimpl
def register_architectures(register: Register) -> None:
    for architecture in (
        MNISTNetworks(),
        SVHNNetworks(),
        CelebANetworks(),
        FacesNetworks(),
        ChairsNetworks(),
    ):
        register(architecture)


@hookimpl
def register_experiments(register: Register) -> None:
    for experiment in experiments():
        register(experiment)
