"""genlatent's own registrations: the ``gan`` model, the standard loss, data sets
and code kinds.

The plugin host registers this module before any entry point, so these names
take precedence over plugins that register the same ones.
"""

from __future__ import annotations

from torchvision import datasets

from genlatent.data import IDXDatasetSource
from genlatent.hookspecs import Register, hookimpl
from genlatent.image_data import image_data_sources
from genlatent.latent import BUILTIN_CODE_KINDS
from genlatent.losses import StandardGANLoss
from genlatent.models import GANModel


@hookimpl
def register_models(register: Register) -> None:
    register(GANModel())


@hookimpl
def register_adversarial_losses(register: Register) -> None:
    register(StandardGANLoss())


@hookimpl
def register_datasets(register: Register) -> None:
    register(
        IDXDatasetSource(
            "mnist", datasets.MNIST, "MNIST handwritten digits, 28x28 gray, 10 classes"
        )
    )
    register(
        IDXDatasetSource(
            "fashion-mnist",
            datasets.FashionMNIST,
            "Fashion-MNIST clothing images, 28x28 gray, 10 classes",
        )
    )
    for source in image_data_sources():
        register(source)


@hookimpl
def register_latent_codes(register: Register) -> None:
    for code_class in BUILTIN_CODE_KINDS:
        register(code_class)
