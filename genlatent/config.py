"""Experiment configuration: attrs classes, JSON round trips and dotted overrides.

An experiment is one :class:`ExperimentConfig`. The command line changes it with
``key=value`` overrides such as ``trainer.max_steps=500`` or ``mi.lambda_cont=2``.
Overrides are parsed against the field's declared type, validated by the field's
validator, and rejected by name when the key is unknown.
"""

from __future__ import annotations

import difflib
import json
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Union

import attrs
import cattrs

from genlatent.errors import ConfigError

# ---------------------------------------------------------------------------
# Validators. Each raises ValueError; set_override() turns it into a ConfigError
# that names the dotted key.


def positive(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


def non_negative(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(
            f"{attribute.name} must be a non-negative number, got {value!r}"
        )


def _is_integer(value: Any) -> bool:
    # bool is a subclass of int, but True is no count. NumPy integers are
    # rejected because the config is saved with the json module.
    return isinstance(value, int) and not isinstance(value, bool)


def positive_integer(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if not (_is_integer(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


def non_negative_integer(
    instance: object, attribute: attrs.Attribute, value: Any
) -> None:
    if not (_is_integer(value) and value >= 0):
        raise ValueError(
            f"{attribute.name} must be a non-negative integer, got {value!r}"
        )


def unit_interval(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if not (isinstance(value, int | float) and 0 <= value < 1):
        raise ValueError(f"{attribute.name} must be in [0, 1), got {value!r}")


def one_of(*choices: str) -> Callable[[object, attrs.Attribute, Any], None]:
    def check(instance: object, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            raise ValueError(
                f"{attribute.name} must be one of {', '.join(choices)}; got {value!r}"
            )

    return check


def device_name(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    base, _, index = str(value).partition(":")
    if base not in ("auto", "cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise ValueError(
            f"{attribute.name} must be auto, cpu, cuda, cuda:N or mps; got {value!r}"
        )


# ---------------------------------------------------------------------------
# Config sections.


@attrs.define
class AdamConfig:
    """Adam settings for one network."""

    lr: float = attrs.field(default=2e-4, validator=positive)
    beta1: float = attrs.field(default=0.5, validator=unit_interval)
    beta2: float = attrs.field(default=0.999, validator=unit_interval)


@attrs.define
class OptimConfig:
    """Per-network optimizers. Regularizer modules (such as Q's head) train with
    the discriminator's optimizer."""

    discriminator: AdamConfig = attrs.field(factory=lambda: AdamConfig(lr=2e-4))
    generator: AdamConfig = attrs.field(factory=lambda: AdamConfig(lr=1e-3))
    # Update all parameters in one fused kernel instead of about ten passes
    # over them, on devices where torch has that kernel. The result matches
    # the unfused update to float32 rounding.
    fused: bool = True


@attrs.define
class DataConfig:
    """Source of the training images."""

    dataset: str = "mnist"
    # Folder to look in first; None searches $GENLATENT_DATA, the user cache
    # folder and /usr/share/datasets/<dataset>.
    root: str | None = None
    split: str = "train"
    # Try a download into the user cache folder when no local copy is found.
    # $GENLATENT_NO_DOWNLOAD=1 turns downloads off everywhere.
    download: bool = True
    # DataLoader worker processes for data sets decoded from files; in-memory
    # data sets ignore it.
    num_workers: int = attrs.field(default=0, validator=non_negative_integer)
    # Side in pixels of the centered square that image-folder data sets cut
    # from each image before resizing. None uses the data set's default and 0
    # the largest centered square. Other data sets ignore it.
    crop: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            [attrs.validators.instance_of(int), non_negative_integer]
        ),
    )
    # Leave out image files that fail to decode, with a warning naming each,
    # instead of stopping with an error before training starts.
    skip_corrupt: bool = False


@attrs.define
class TrainerConfig:
    """The training loop."""

    max_steps: int = attrs.field(default=5000, validator=positive_integer)
    batch_size: int = attrs.field(default=128, validator=positive_integer)
    seed: int = 0
    device: str = attrs.field(default="auto", validator=device_name)
    # Steps between metric records, sample grids and checkpoints.
    log_every: int = attrs.field(default=50, validator=positive_integer)
    sample_every: int = attrs.field(default=500, validator=positive_integer)
    checkpoint_every: int = attrs.field(default=1000, validator=positive_integer)
    keep_checkpoints: int = attrs.field(default=3, validator=positive_integer)
    num_samples: int = attrs.field(default=64, validator=positive_integer)
    progress: bool = True
    deterministic: bool = False
    # What a non-finite loss does: stop the run, or skip that update.
    on_divergence: str = attrs.field(default="stop", validator=one_of("stop", "skip"))
    # Discriminator (critic) updates per generator update, as n_critic in
    # WGAN-GP (Gulrajani et al., 2017, Algorithm 1). Every step updates the
    # discriminator on a fresh batch, and the generator updates on the steps
    # divisible by n_critic, so max_steps counts discriminator updates. Models
    # without a discriminator ignore it.
    n_critic: int = attrs.field(default=1, validator=positive_integer)
    # Autocast dtype of the forward passes: auto is bf16 on CUDA devices that
    # support it and fp32 elsewhere. Weights and optimizer states stay fp32.
    precision: str = attrs.field(
        default="auto", validator=one_of("auto", "fp32", "bf16")
    )
    # When the divergence check reads the losses on the host: every update
    # (step), or at each metric record and checkpoint (deferred), which keeps
    # the step free of host synchronisation. Deferred needs fused Adam, whose
    # kernel skips a flagged update on the device. auto is deferred on CUDA.
    divergence_check: str = attrs.field(
        default="auto", validator=one_of("auto", "step", "deferred")
    )
    # Store 4-D activations and weights channels-last (NHWC).
    channels_last: bool = False
    # Compile the networks with torch.compile (needs a C++ compiler on CPU).
    compile: bool = False
    # Under torchrun: synchronise batch-norm statistics across ranks with
    # torch.nn.SyncBatchNorm. None means on for CUDA and off for CPU, where
    # torch has no SyncBatchNorm kernels. Ignored in a single process.
    sync_batch_norm: bool | None = None
    # Seconds a collective waits for the other ranks before it fails.
    process_group_timeout_s: float = attrs.field(default=600.0, validator=positive)


@attrs.define
class WandbConfig:
    """Weights & Biases logging.

    ``auto`` honours ``WANDB_MODE`` when set, logs online when an API key is
    configured, and otherwise logs offline into the run folder, where
    ``wandb sync`` can upload it later.
    """

    mode: str = attrs.field(
        default="auto", validator=one_of("auto", "offline", "online", "disabled")
    )
    project: str = "genlatent"
    entity: str | None = None


@attrs.define
class ExperimentConfig:
    """A fully resolved experiment.

    ``latent`` lists latent codes as dicts that
    :meth:`genlatent.latent.LatentSpec.from_config` reads, in generator-input
    order. ``regularizers`` maps a registered regularizer name to its config
    object; overrides reach it as ``NAME.field=value``. ``model`` names the
    registered model whose trainer runs the experiment. ``loss_config`` is the
    config object of the adversarial loss, None for a loss without settings;
    overrides reach it as ``loss_config.field=value``.
    ``discriminator_norm`` is the normalization of the discriminator trunk:
    ``auto`` picks layer norm for losses that differentiate the critic per
    sample (such as wgan-gp) and batch norm otherwise.
    """

    name: str
    architecture: str
    latent: list[dict[str, Any]]
    description: str = ""
    model: str = "gan"
    loss: str = "standard"
    loss_config: Any = None
    discriminator_norm: str = attrs.field(
        default="auto", validator=one_of("auto", "batch", "layer", "none")
    )
    data: DataConfig = attrs.field(factory=DataConfig)
    optim: OptimConfig = attrs.field(factory=OptimConfig)
    trainer: TrainerConfig = attrs.field(factory=TrainerConfig)
    wandb: WandbConfig = attrs.field(factory=WandbConfig)
    regularizers: dict[str, Any] = attrs.field(factory=dict)


# ---------------------------------------------------------------------------
# JSON round trips.

_converter = cattrs.Converter(forbid_extra_keys=True)


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """Return the config as JSON-ready nested dicts."""
    return attrs.asdict(config, recurse=True)


def config_from_dict(
    data: Mapping[str, Any],
    regularizer_configs: Mapping[str, type],
    loss_configs: Mapping[str, type | None] | None = None,
) -> ExperimentConfig:
    """Rebuild a config written by :func:`config_to_dict`.

    Args:
        data: the nested dict, for example a run's ``config.json``.
        regularizer_configs: config class of each registered regularizer.
        loss_configs: config class of each registered adversarial loss (None
            for a loss without settings); needed when ``data`` has a
            ``loss_config``.
    """
    fields = dict(data)
    loss_values = fields.pop("loss_config", None)
    regularizers = {}
    for name, values in dict(fields.pop("regularizers", {}) or {}).items():
        if name not in regularizer_configs:
            raise ConfigError(
                f"config names regularizer {name!r}, which no loaded plugin "
                f"registers; registered: {', '.join(sorted(regularizer_configs))}"
            )
        regularizers[name] = _structure(values, regularizer_configs[name], name)
    config = _structure(fields, ExperimentConfig, "config")
    config.regularizers = regularizers
    if loss_values is not None:
        loss_class = (loss_configs or {}).get(config.loss)
        if loss_class is None:
            raise ConfigError(
                f"config sets loss_config for loss {config.loss!r}, which takes "
                "no settings or is not registered; remove loss_config"
            )
        config.loss_config = _structure(loss_values, loss_class, "loss_config")
    return config


def _structure(values: Any, cls: type, where: str) -> Any:
    try:
        return _converter.structure(values, cls)
    except Exception as error:  # cattrs groups every field error in one exception
        details = "; ".join(cattrs.transform_error(error, path=where))
        raise ConfigError(f"invalid config: {details}") from None


def dumps(config: ExperimentConfig) -> str:
    """Serialise a config as indented JSON."""
    return json.dumps(config_to_dict(config), indent=2, sort_keys=False)


# ---------------------------------------------------------------------------
# Dotted overrides.


def parse_override(text: str) -> tuple[str, str]:
    """Split ``"a.b=value"`` into its key and raw value."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"invalid override {text!r}: write KEY=VALUE, for example "
            "trainer.max_steps=500"
        )
    if any(not part.isidentifier() for part in key.split(".")):
        raise ConfigError(
            f"invalid override key {key!r}: use dotted field names such as "
            "optim.generator.lr"
        )
    return key, value


def apply_overrides(config: ExperimentConfig, overrides: Iterable[str]) -> None:
    """Apply ``KEY=VALUE`` overrides in order, validating each."""
    for text in overrides:
        key, value = parse_override(text)
        set_override(config, key, value)


def set_override(config: ExperimentConfig, key: str, raw: str) -> None:
    """Set the field at dotted ``key`` from the string ``raw``.

    The first part may also name a regularizer (``mi.lambda_disc``), which is
    short for ``regularizers.mi.lambda_disc``. Latent codes are addressed by
    name: ``latent.c2.prior=gaussian``.
    """
    parts = key.split(".")
    top_level = attrs.fields_dict(ExperimentConfig)
    if parts[0] not in top_level and parts[0] in config.regularizers:
        parts = ["regularizers", *parts]
    if parts[0] == "latent":
        _set_latent_field(config, key, parts[1:], raw)
        return

    target: Any = config
    for depth, part in enumerate(parts[:-1]):
        if isinstance(target, dict):
            if part not in target:
                raise _unknown_key(key, part, list(target), ".".join(parts[:depth]))
            target = target[part]
        else:
            _check_field(target, part, key, ".".join(parts[:depth]))
            target = getattr(target, part)
    leaf = parts[-1]
    if not attrs.has(type(target)):
        raise ConfigError(f"override {key!r} does not name a config field")
    fields = _check_field(target, leaf, key, ".".join(parts[:-1]))
    field = fields[leaf]
    if attrs.has(_resolved_type(type(target), leaf)) or isinstance(
        getattr(target, leaf), dict | list
    ):
        raise ConfigError(
            f"override {key!r} names a config section; set one of its fields, "
            f"for example {key}.{_first_field(getattr(target, leaf))}"
        )
    value = parse_value(raw, _resolved_type(type(target), leaf), key)
    try:
        setattr(target, field.name, value)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"invalid override {key}={raw}: {error}") from None


def _set_latent_field(
    config: ExperimentConfig, key: str, parts: list[str], raw: str
) -> None:
    names = [str(code.get("name")) for code in config.latent]
    if len(parts) != 2:
        raise ConfigError(
            f"override {key!r}: latent codes are set as latent.CODE.FIELD, "
            f"with CODE one of {', '.join(names)}"
        )
    name, field = parts
    if name not in names:
        raise _unknown_key(key, name, names, "latent")
    code = config.latent[names.index(name)]
    if field in ("name", "kind"):
        raise ConfigError(f"override {key!r}: a code's {field} cannot be overridden")
    previous = code.get(field)
    value: Any
    if raw.lower() in ("none", "null"):
        # Validated below: fields that take None (fixed_std) accept it.
        value = None
    elif previous is None:
        value = _literal(raw)
    else:
        value = parse_value(raw, type(previous), key)
    # Build the code to validate the field now rather than at training time.
    from genlatent.latent import code_from_config

    candidate = {**code, field: value}
    try:
        code_from_config(candidate)
    except ValueError as error:
        raise ConfigError(f"invalid override {key}={raw}: {error}") from None
    code[field] = value


def _literal(raw: str) -> Any:
    for parse in (int, float):
        try:
            return parse(raw)
        except ValueError:
            pass
    return raw


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_value(raw: str, annotation: Any, key: str) -> Any:
    """Convert the string ``raw`` to ``annotation`` (bool, int, float, str,
    Optional or Literal) or raise a ConfigError naming ``key``."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if type(None) in options and raw.lower() in ("none", "null"):
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return parse_value(raw, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"invalid value for {key}: {raw!r}")
    if origin is Literal:
        choices = typing.get_args(annotation)
        if raw not in choices:
            raise ConfigError(
                f"invalid override {key}={raw}: expected one of "
                f"{', '.join(map(str, choices))}"
            )
        return raw
    if annotation is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(
            f"invalid override {key}={raw}: expected a boolean (true or false)"
        )
    if annotation is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(
                f"invalid override {key}={raw}: expected an integer"
            ) from None
    if annotation is float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(
                f"invalid override {key}={raw}: expected a number"
            ) from None
        if not math.isfinite(value):
            raise ConfigError(f"invalid override {key}={raw}: expected a finite number")
        return value
    if annotation is str:
        return raw
    raise ConfigError(f"override {key!r} sets a field of unsupported type {annotation}")


def _check_field(
    target: Any, part: str, key: str, prefix: str
) -> dict[str, attrs.Attribute]:
    if not attrs.has(type(target)):
        raise ConfigError(f"override {key!r}: {prefix or 'config'} has no fields")
    fields = attrs.fields_dict(type(target))
    if part not in fields:
        names = list(fields)
        if isinstance(target, ExperimentConfig):
            names += list(target.regularizers)
        raise _unknown_key(key, part, names, prefix)
    return fields


def _unknown_key(key: str, part: str, names: list[str], prefix: str) -> ConfigError:
    where = f"in {prefix}" if prefix else "at the top level"
    close = difflib.get_close_matches(part, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(
        f"unknown config key {key!r}: no field {part!r} {where}{hint}; "
        f"known: {', '.join(names)}"
    )


def _resolved_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _first_field(section: Any) -> str:
    if attrs.has(type(section)):
        return next(iter(attrs.fields_dict(type(section))))
    if isinstance(section, dict) and section:
        return str(next(iter(section)))
    return "FIELD"
