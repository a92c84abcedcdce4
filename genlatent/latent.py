"""Latent codes, their priors and posteriors, and the latent specification.

A generator's input is the concatenation of latent codes and incompressible noise,
in the order the :class:`LatentSpec` lists them. A recognition network Q returns
one flat vector of posterior parameters per image; the specification splits it
back per code and scores the sampled code under Q's posterior. All
log-likelihoods and entropies are in nats.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import attrs
import torch
import torch.nn.functional as F

from genlatent.errors import LatentSpecError

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

ContinuousPrior = Literal["uniform", "gaussian"]


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name or not name.isidentifier():
        raise LatentSpecError(
            f"invalid latent code name {name!r}: use a non-empty identifier "
            "such as 'c1' or 'azimuth'"
        )


def _check_positive_int(code: str, field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LatentSpecError(
            f"latent code {code!r}: {field} must be a positive integer, got {value!r}"
        )


def _check_choice(code: str, field: str, value: object, choices: Iterable[str]) -> None:
    allowed = tuple(choices)
    if value not in allowed:
        raise LatentSpecError(
            f"latent code {code!r}: {field} must be one of {', '.join(allowed)}; "
            f"got {value!r}"
        )


class LatentCode(abc.ABC):
    """One block of the generator input.

    Subclasses define the prior, the width of the block in the generator input
    (``input_dim``), the number of recognition-network outputs the posterior
    needs (``posterior_dim``, 0 for noise) and the negative log-likelihood of a
    sampled value under that posterior.

    A subclass is an attrs class with a unique ``kind``, because
    :meth:`to_config` and :func:`code_from_config` read its attrs fields. A
    plugin makes a new kind usable in configs with the
    ``register_latent_codes`` hook.
    """

    kind: ClassVar[str]
    name: str

    @property
    @abc.abstractmethod
    def input_dim(self) -> int:
        """Width of this code in the generator input."""

    @property
    @abc.abstractmethod
    def posterior_dim(self) -> int:
        """Number of recognition-network outputs this code's posterior takes."""

    @property
    @abc.abstractmethod
    def entropy(self) -> float | None:
        """Entropy H(c) of the prior in nats, or None where it is not used."""

    @abc.abstractmethod
    def sample(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw ``(batch_size, input_dim)`` values from the prior."""

    def negative_log_likelihood(
        self, posterior_params: torch.Tensor, value: torch.Tensor
    ) -> torch.Tensor:
        """Score ``value`` under Q's posterior.

        Args:
            posterior_params: ``(batch, posterior_dim)`` raw recognition outputs.
            value: ``(batch, input_dim)`` the code as fed to the generator.

        Returns:
            ``(batch,)`` negative log-likelihood in nats.
        """
        raise LatentSpecError(
            f"latent code {self.name!r} of kind {self.kind!r} has no posterior"
        )

    def traversal_values(
        self, drawn: torch.Tensor, *, value_range: tuple[float, float], steps: int
    ) -> tuple[list[torch.Tensor], int] | None:
        """Return the values this code takes along the rows of a traversal grid.

        Args:
            drawn: ``(rows, input_dim)`` values of this code drawn from the prior.
            value_range: the range a continuous sweep covers.
            steps: the number of values a continuous sweep takes.

        Returns:
            Blocks of ``(rows * num_columns, input_dim)`` values in row-major
            order, each a group of rows of the grid, and ``num_columns``.
            None for a kind that has no traversal, such as noise.
        """
        return None

    def to_config(self) -> dict[str, Any]:
        """Return the code as a JSON-ready dict that :func:`code_from_config` reads."""
        return {"kind": self.kind, **attrs.asdict(self)}  # type: ignore[arg-type]


@attrs.frozen
class CategoricalCode(LatentCode):
    """A k-way categorical code with a uniform prior, fed to G one-hot.

    Q returns ``num_categories`` logits and the posterior is their softmax.
    """

    kind: ClassVar[str] = "categorical"
    name: str
    num_categories: int

    def __attrs_post_init__(self) -> None:
        _check_name(self.name)
        _check_positive_int(self.name, "num_categories", self.num_categories)

    @property
    def input_dim(self) -> int:
        return self.num_categories

    @property
    def posterior_dim(self) -> int:
        return self.num_categories

    @property
    def entropy(self) -> float:
        return math.log(self.num_categories)

    def sample(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        categories = torch.randint(
            self.num_categories, (batch_size,), generator=generator, device=device
        )
        return self.one_hot(categories, dtype=dtype)

    def one_hot(
        self, categories: torch.Tensor, *, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Encode ``(batch,)`` category indices as ``(batch, num_categories)``."""
        return F.one_hot(categories, self.num_categories).to(dtype)

    def negative_log_likelihood(
        self, posterior_params: torch.Tensor, value: torch.Tensor
    ) -> torch.Tensor:
        log_probs = F.log_softmax(posterior_params, dim=-1)
        return -(value * log_probs).sum(dim=-1)

    def posterior_probabilities(self, posterior_params: torch.Tensor) -> torch.Tensor:
        """Softmax over the ``(batch, num_categories)`` logits."""
        return F.softmax(posterior_params, dim=-1)

    def traversal_values(
        self, drawn: torch.Tensor, *, value_range: tuple[float, float], steps: int
    ) -> tuple[list[torch.Tensor], int]:
        # Every category in turn along each row: 0, 1, ..., K-1, 0, 1, ...
        categories = torch.arange(self.num_categories).repeat(drawn.shape[0])
        return [self.one_hot(categories, dtype=drawn.dtype)], self.num_categories


@attrs.frozen
class ContinuousCode(LatentCode):
    """A continuous code of ``dim`` independent values.

    The prior is Unif(-1, 1) per value by default, or a standard Gaussian. Q's
    posterior is a diagonal Gaussian: the first ``dim`` outputs are the mean and
    the next ``dim`` are the log standard deviation, so std = exp(output) is
    always positive. With ``fixed_std`` set, Q outputs only the mean and the std
    is that constant (1.0 is the common choice in reimplementations).
    """

    kind: ClassVar[str] = "continuous"
    name: str
    dim: int = 1
    prior: ContinuousPrior = "uniform"
    fixed_std: float | None = None

    def __attrs_post_init__(self) -> None:
        _check_name(self.name)
        _check_positive_int(self.name, "dim", self.dim)
        _check_choice(self.name, "prior", self.prior, ("uniform", "gaussian"))
        # bool is an int subclass, so True would otherwise pass as std 1.
        if self.fixed_std is not None and not (
            isinstance(self.fixed_std, int | float)
            and not isinstance(self.fixed_std, bool)
            and math.isfinite(self.fixed_std)
            and self.fixed_std > 0
        ):
            raise LatentSpecError(
                f"latent code {self.name!r}: fixed_std must be a finite positive "
                f"number or None (learned std), got {self.fixed_std!r}"
            )

    @property
    def input_dim(self) -> int:
        return self.dim

    @property
    def posterior_dim(self) -> int:
        return self.dim if self.fixed_std is not None else 2 * self.dim

    @property
    def entropy(self) -> float:
        if self.prior == "uniform":
            return self.dim * math.log(2.0)
        return self.dim * (HALF_LOG_2PI + 0.5)

    def sample(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        shape = (batch_size, self.dim)
        if self.prior == "uniform":
            unit = torch.rand(shape, generator=generator, device=device, dtype=dtype)
            return unit * 2.0 - 1.0
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def posterior_mean_log_std(
        self, posterior_params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Split raw outputs into ``(batch, dim)`` mean and log standard deviation."""
        mean = posterior_params[..., : self.dim]
        if self.fixed_std is not None:
            return mean, torch.full_like(mean, math.log(self.fixed_std))
        return mean, posterior_params[..., self.dim :]

    def negative_log_likelihood(
        self, posterior_params: torch.Tensor, value: torch.Tensor
    ) -> torch.Tensor:
        mean, log_std = self.posterior_mean_log_std(posterior_params)
        # Standardise with exp(-log_std) instead of dividing by std**2: std**2
        # underflows to 0 for log_std below about -44 in float32 and 0/0 is NaN,
        # while this form stays exact at value == mean and overflows to +inf
        # otherwise. No epsilon is added, since one would change the value.
        standardized = (value - mean) * torch.exp(-log_std)
        per_dim = HALF_LOG_2PI + log_std + 0.5 * standardized.square()
        return per_dim.sum(dim=-1)

    def traversal_values(
        self, drawn: torch.Tensor, *, value_range: tuple[float, float], steps: int
    ) -> tuple[list[torch.Tensor], int]:
        # One block per value of the code: that value sweeps the range while
        # the code's other values keep their draws.
        rows = drawn.shape[0]
        sweep = torch.linspace(*value_range, steps, dtype=drawn.dtype)
        blocks = []
        for dimension in range(self.dim):
            swept = drawn.repeat_interleave(steps, dim=0)
            swept[:, dimension] = sweep.repeat(rows)
            blocks.append(swept)
        return blocks, steps


@attrs.frozen
class NoiseCode(LatentCode):
    """Incompressible noise z: part of G's input, never scored by Q."""

    kind: ClassVar[str] = "noise"
    name: str
    dim: int
    distribution: Literal["gaussian", "uniform"] = "gaussian"

    def __attrs_post_init__(self) -> None:
        _check_name(self.name)
        _check_positive_int(self.name, "dim", self.dim)
        _check_choice(
            self.name, "distribution", self.distribution, ("gaussian", "uniform")
        )

    @property
    def input_dim(self) -> int:
        return self.dim

    @property
    def posterior_dim(self) -> int:
        return 0

    @property
    def entropy(self) -> None:
        return None

    def sample(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        shape = (batch_size, self.dim)
        if self.distribution == "uniform":
            unit = torch.rand(shape, generator=generator, device=device, dtype=dtype)
            return unit * 2.0 - 1.0
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)


BUILTIN_CODE_KINDS: tuple[type[LatentCode], ...] = (
    CategoricalCode,
    ContinuousCode,
    NoiseCode,
)

# The code kinds that configs may name, by kind. genlatent.plugins.load_plugins
# replaces them with every kind the loaded plugins registered (the built-ins
# first, through genlatent.defaults), so the most recently loaded plugin host
# decides. Without plugins loaded, only the built-in kinds are known.
_code_kinds: dict[str, type[LatentCode]] = {cls.kind: cls for cls in BUILTIN_CODE_KINDS}


def code_kinds() -> Mapping[str, type[LatentCode]]:
    """Return a read-only view of the code kinds that configs may name."""
    return MappingProxyType(_code_kinds)


def set_code_kinds(kinds: Mapping[str, type[LatentCode]]) -> None:
    """Replace the code kinds that :func:`code_from_config` reads by default.

    :func:`genlatent.plugins.load_plugins` calls this with the kinds the
    plugins registered through ``register_latent_codes``.

    Raises:
        LatentSpecError: a value is not a LatentCode subclass or is registered
            under a name other than its ``kind``.
    """
    for name, cls in kinds.items():
        if not (isinstance(cls, type) and issubclass(cls, LatentCode)):
            raise LatentSpecError(
                f"latent code kind {name!r} must be a LatentCode subclass, got {cls!r}"
            )
        if getattr(cls, "kind", None) != name:
            raise LatentSpecError(
                f"latent code class {cls.__name__} has kind "
                f"{getattr(cls, 'kind', None)!r} but is registered as {name!r}"
            )
    _code_kinds.clear()
    _code_kinds.update(kinds)


def code_from_config(
    config: Mapping[str, Any],
    kinds: Mapping[str, type[LatentCode]] | None = None,
) -> LatentCode:
    """Build a latent code from a dict such as ``{"kind": "categorical", ...}``.

    Args:
        config: the code's ``kind`` and its fields.
        kinds: the code classes by kind; None uses :func:`code_kinds`, the
            kinds of the most recently loaded plugins.
    """
    known_kinds = code_kinds() if kinds is None else kinds
    fields = dict(config)
    kind = fields.pop("kind", None)
    if kind not in known_kinds:
        raise LatentSpecError(
            f"unknown latent code kind {kind!r} in {dict(config)!r}; "
            f"known kinds: {', '.join(sorted(known_kinds))}. A plugin adds kinds "
            "with the register_latent_codes hook"
        )
    cls = known_kinds[kind]
    known = set(attrs.fields_dict(cls))  # type: ignore[arg-type]
    unknown = sorted(set(fields) - known)
    if unknown:
        raise LatentSpecError(
            f"latent code {fields.get('name')!r} of kind {kind!r}: unknown "
            f"field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        return cls(**fields)
    except TypeError as error:
        raise LatentSpecError(
            f"latent code {fields.get('name')!r} of kind {kind!r}: {error}"
        ) from None


class LatentSpec:
    """An ordered composition of latent codes and noise.

    The generator input is the concatenation of every code's ``input_dim``
    columns in the order given; Q's flat output is the concatenation of every
    scored code's ``posterior_dim`` columns in the same order (noise has none).
    """

    def __init__(self, codes: Sequence[LatentCode]) -> None:
        codes = tuple(codes)
        if not codes:
            raise LatentSpecError("a latent specification needs at least one code")
        names = [code.name for code in codes]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise LatentSpecError(
                f"latent code names must be unique; repeated: {', '.join(duplicates)}"
            )
        self.codes = codes
        self.input_slices: dict[str, slice] = {}
        self.posterior_slices: dict[str, slice] = {}
        input_offset = posterior_offset = 0
        for code in codes:
            self.input_slices[code.name] = slice(
                input_offset, input_offset + code.input_dim
            )
            input_offset += code.input_dim
            if code.posterior_dim:
                self.posterior_slices[code.name] = slice(
                    posterior_offset, posterior_offset + code.posterior_dim
                )
                posterior_offset += code.posterior_dim
        self.input_dim = input_offset
        self.posterior_dim = posterior_offset

    def __repr__(self) -> str:
        return f"LatentSpec({list(self.codes)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LatentSpec) and self.codes == other.codes

    def __hash__(self) -> int:
        return hash(self.codes)

    def __getitem__(self, name: str) -> LatentCode:
        for code in self.codes:
            if code.name == name:
                return code
        raise LatentSpecError(
            f"no latent code named {name!r}; codes: "
            f"{', '.join(code.name for code in self.codes)}"
        )

    @property
    def scored_codes(self) -> tuple[LatentCode, ...]:
        """Codes that Q scores, in order (every code except noise)."""
        return tuple(code for code in self.codes if code.posterior_dim)

    @property
    def traversable_codes(self) -> tuple[LatentCode, ...]:
        """Codes whose kind defines a traversal (categorical and continuous
        codes, and plugin kinds that override ``traversal_values``)."""
        return tuple(
            code
            for code in self.codes
            if type(code).traversal_values is not LatentCode.traversal_values
        )

    def entropies(self) -> dict[str, float]:
        """Prior entropy H(c) in nats of each scored code that has a finite one."""
        entropies = {}
        for code in self.scored_codes:
            entropy = code.entropy
            if entropy is not None and math.isfinite(entropy):
                entropies[code.name] = entropy
        return entropies

    def sample(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw a ``(batch_size, input_dim)`` generator input from the priors.

        Codes draw from ``generator`` one after another in spec order, so the
        same generator state always gives the same batch.
        """
        values = self.sample_values(
            batch_size, generator=generator, device=device, dtype=dtype
        )
        return self.concat_input(values)

    def sample_values(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> dict[str, torch.Tensor]:
        """Draw ``{code name: (batch_size, input_dim)}`` values from the priors.

        These are the draws that :meth:`sample` concatenates, so a caller can
        replace some codes' values and still lay out the rest identically.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise LatentSpecError(f"batch_size must be an integer, got {batch_size!r}")
        if batch_size < 1:
            raise LatentSpecError(f"batch_size must be positive, got {batch_size}")
        return {
            code.name: code.sample(
                batch_size, generator=generator, device=device, dtype=dtype
            )
            for code in self.codes
        }

    def concat_input(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Assemble per-code ``(batch, input_dim)`` values into one generator input.

        This is the only place a generator input is assembled, so training,
        sampling and traversal all lay codes out identically.
        """
        missing = [code.name for code in self.codes if code.name not in values]
        extra = sorted(set(values) - set(self.input_slices))
        if missing or extra:
            raise LatentSpecError(
                f"generator input needs exactly the codes "
                f"{', '.join(self.input_slices)}; missing: {missing or 'none'}, "
                f"unknown: {extra or 'none'}"
            )
        parts = []
        for code in self.codes:
            value = values[code.name]
            if value.ndim != 2 or value.shape[1] != code.input_dim:
                raise LatentSpecError(
                    f"latent code {code.name!r} expects values of shape "
                    f"(batch, {code.input_dim}), got {tuple(value.shape)}"
                )
            parts.append(value)
        return torch.cat(parts, dim=1)

    def split_input(self, latent_input: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a ``(batch, input_dim)`` generator input into per-code views."""
        widths = {code.name: code.input_dim for code in self.codes}
        self._check_width("generator input", latent_input, widths)
        return {
            name: latent_input[:, columns]
            for name, columns in self.input_slices.items()
        }

    def split_posterior(
        self, posterior_params: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Split Q's ``(batch, posterior_dim)`` output into per-code views."""
        widths = {code.name: code.posterior_dim for code in self.scored_codes}
        self._check_width("recognition output", posterior_params, widths)
        return {
            name: posterior_params[:, columns]
            for name, columns in self.posterior_slices.items()
        }

    def negative_log_likelihoods(
        self, posterior_params: torch.Tensor, latent_input: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Score every sampled code under Q's posterior.

        Returns:
            ``{code name: (batch,) NLL in nats}`` for each scored code.
        """
        params = self.split_posterior(posterior_params)
        values = self.split_input(latent_input)
        return {
            code.name: code.negative_log_likelihood(
                params[code.name], values[code.name]
            )
            for code in self.scored_codes
        }

    def mutual_information(
        self, posterior_params: torch.Tensor, latent_input: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Estimate the lower bound L_I = H(c) - E[NLL] per code, in nats.

        Codes whose prior entropy is not finite get the negative mean NLL, which
        is L_I up to a constant and has the same gradient.
        """
        entropies = self.entropies()
        return {
            name: entropies.get(name, 0.0) - nll.mean()
            for name, nll in self.negative_log_likelihoods(
                posterior_params, latent_input
            ).items()
        }

    def to_config(self) -> list[dict[str, Any]]:
        """Return the specification as JSON-ready dicts, one per code."""
        return [code.to_config() for code in self.codes]

    @classmethod
    def from_config(
        cls,
        config: Iterable[Mapping[str, Any]],
        kinds: Mapping[str, type[LatentCode]] | None = None,
    ) -> LatentSpec:
        """Rebuild a specification written by :meth:`to_config`.

        Args:
            config: one dict per code, in generator-input order.
            kinds: the code classes by kind; None uses :func:`code_kinds`, the
                kinds of the most recently loaded plugins.
        """
        return cls([code_from_config(code, kinds) for code in config])

    @staticmethod
    def _check_width(
        what: str, tensor: torch.Tensor, widths: Mapping[str, int]
    ) -> None:
        width = sum(widths.values())
        if tensor.ndim != 2 or tensor.shape[1] != width:
            layout = ", ".join(f"{name}={dim}" for name, dim in widths.items())
            raise LatentSpecError(
                f"{what} must have shape (batch, {width}) for codes [{layout}], "
                f"got {tuple(tensor.shape)}"
            )
