"""InfoGAN for genlatent: the mutual-information regularizer, the networks of
the InfoGAN paper and its experiments, registered as a genlatent plugin."""

from genlatent_infogan.mutual_information import (
    MutualInformation,
    MutualInformationConfig,
)

__all__ = ["MutualInformation", "MutualInformationConfig"]
