"""Plugin discovery and the registry of what plugins contribute.

Plugins are found in the ``genlatent`` entry-point group. genlatent's own
defaults load first, then the plugins that ship with the ``genlatent``
distribution, then third-party plugins in order of distribution and entry-point
name. Each plugin loads and registers in isolation: one that fails to import,
or registers something invalid, is reported with its name and distribution and
the others keep working.

Name clashes follow one rule: the first registration of a name wins, so
built-ins always win, and every later registration of the same name is rejected
with a warning that names both plugins.

The latent code kinds of the most recently loaded host are the ones that
configs may name (:func:`genlatent.latent.code_kinds`).

Environment variables:
    GENLATENT_DISABLE_PLUGINS: comma-separated entry-point or distribution names
        to skip.
    GENLATENT_STRICT_PLUGINS: set to 1 to turn every plugin problem into an
        error (for plugin authors).
"""

from __future__ import annotations

import copy
import difflib
import importlib.metadata
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import attrs
import pluggy

from genlatent import hookspecs
from genlatent.errors import PluginError, UnknownNameError
from genlatent.latent import LatentCode, set_code_kinds

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "genlatent"
PROJECT_DISTRIBUTION = "genlatent"
DISABLE_ENV = "GENLATENT_DISABLE_PLUGINS"
STRICT_ENV = "GENLATENT_STRICT_PLUGINS"
CORE_PLUGIN_NAME = "genlatent.defaults"

T = TypeVar("T")


@attrs.define
class RegistryKind:
    """One kind of registered object: its hook, its plural and its check."""

    hook: str
    plural: str
    expected: str
    key: Callable[[Any], str]
    check: Callable[[Any], bool]


def _kinds() -> tuple[RegistryKind, ...]:
    # Imported here because these modules import the plugin machinery's users.
    from genlatent.config import ExperimentConfig
    from genlatent.data import DatasetSource
    from genlatent.losses import AdversarialLoss
    from genlatent.models import Model
    from genlatent.nn import Architecture
    from genlatent.regularizers import Regularizer

    def is_subclass(base: type) -> Callable[[Any], bool]:
        return lambda obj: isinstance(obj, type) and issubclass(obj, base)

    return (
        RegistryKind(
            "register_models",
            "models",
            "a Model instance",
            lambda obj: obj.name,
            lambda obj: isinstance(obj, Model),
        ),
        RegistryKind(
            "register_experiments",
            "experiments",
            "an ExperimentConfig",
            lambda obj: obj.name,
            lambda obj: isinstance(obj, ExperimentConfig),
        ),
        RegistryKind(
            "register_architectures",
            "architectures",
            "an Architecture instance",
            lambda obj: obj.name,
            lambda obj: isinstance(obj, Architecture),
        ),
        RegistryKind(
            "register_regularizers",
            "regularizers",
            "a Regularizer subclass",
            lambda obj: obj.name,
            is_subclass(Regularizer),
        ),
        RegistryKind(
            "register_adversarial_losses",
            "losses",
            "an AdversarialLoss instance",
            lambda obj: obj.name,
            lambda obj: isinstance(obj, AdversarialLoss),
        ),
        RegistryKind(
            "register_datasets",
            "datasets",
            "a DatasetSource instance",
            lambda obj: obj.name,
            lambda obj: isinstance(obj, DatasetSource),
        ),
        RegistryKind(
            "register_latent_codes",
            "latent_codes",
            "a concrete LatentCode subclass defined with attrs and with a str kind",
            lambda obj: obj.kind,
            is_code_kind,
        ),
    )


def is_code_kind(obj: Any) -> bool:
    """Check that ``obj`` can serve as a code kind in configs: a concrete
    LatentCode subclass whose attrs fields :func:`code_from_config` fills."""
    return (
        isinstance(obj, type)
        and issubclass(obj, LatentCode)
        and not inspect.isabstract(obj)
        and attrs.has(obj)
        and isinstance(getattr(obj, "kind", None), str)
    )


@attrs.define
class PluginRecord:
    """Load status and registrations of one plugin."""

    name: str
    distribution: str | None
    version: str | None
    builtin: bool
    status: str = "loaded"  # loaded, failed or disabled
    error: str | None = None
    registered: dict[str, list[str]] = attrs.field(factory=dict)

    @property
    def origin(self) -> str:
        """The plugin with the distribution and version it came from."""
        if self.distribution is None:
            return f"plugin {self.name!r}"
        return f"plugin {self.name!r} (distribution {self.distribution} {self.version})"


class PluginHost:
    """Loaded plugins and the objects they registered, by kind and name."""

    def __init__(self, manager: pluggy.PluginManager, strict: bool) -> None:
        self.manager = manager
        self.strict = strict
        self.records: dict[str, PluginRecord] = {}
        self.problems: list[str] = []
        self.registry: dict[str, dict[str, tuple[Any, str]]] = {}

    # -- lookups -----------------------------------------------------------

    def names(self, plural: str) -> list[str]:
        """Sorted names registered under ``plural`` (such as "experiments")."""
        return sorted(self.registry.get(plural, {}))

    def get(self, plural: str, name: str) -> Any:
        """Return the object registered as ``name``, or raise UnknownNameError."""
        entries = self.registry.get(plural, {})
        if name not in entries:
            singular = _singular(plural).replace("_", " ")
            known = sorted(entries)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownNameError(
                f"unknown {singular} {name!r}{hint}; registered: "
                f"{', '.join(known) or 'none'}"
            )
        return entries[name][0]

    def provider(self, plural: str, name: str) -> PluginRecord:
        """Return the record of the plugin that registered ``name``."""
        self.get(plural, name)
        return self.records[self.registry[plural][name][1]]

    def experiment(self, name: str) -> Any:
        """Return a fresh, independent copy of the named experiment's config."""
        return copy.deepcopy(self.get("experiments", name))

    def code_kinds(self) -> dict[str, Any]:
        """Return the registered latent code classes by kind, the mapping that
        :meth:`genlatent.latent.LatentSpec.from_config` takes as ``kinds``."""
        return {
            name: entry[0]
            for name, entry in self.registry.get("latent_codes", {}).items()
        }

    # -- loading -----------------------------------------------------------

    def report(
        self,
        problem: str,
        consequence: str,
        cause: BaseException | None = None,
    ) -> None:
        """Record a plugin problem: a warning naming what was skipped, or
        an error in strict mode."""
        if self.strict:
            raise PluginError(f"{problem} (strict plugin mode)") from cause
        message = f"{problem}; {consequence}"
        self.problems.append(message)
        logger.warning("%s", message)

    def add(self, plugin: object, record: PluginRecord) -> None:
        """Register ``plugin`` with pluggy and record it."""
        self.records[record.name] = record
        try:
            self.manager.register(plugin, name=record.name)
        except Exception as error:
            record.status = "failed"
            record.error = f"{type(error).__name__}: {error}"
            self.report(f"{record.origin} is invalid: {record.error}", "it was skipped")

    def collect(self) -> None:
        """Call every plugin's register hooks, one plugin at a time.

        Plugins register in load order, each calling all its hooks before the
        next one starts. A plugin whose hook raises is marked failed and
        contributes nothing: what it registered is withdrawn before any later
        plugin registers, and its remaining hooks are not called.
        """
        kinds = _kinds()
        impls = {
            kind.hook: {
                impl.plugin_name: impl
                for impl in getattr(self.manager.hook, kind.hook).get_hookimpls()
            }
            for kind in kinds
        }
        for record in list(self.records.values()):
            for kind in kinds:
                if record.status != "loaded":
                    break
                impl = impls[kind.hook].get(record.name)
                if impl is not None:
                    entries = self.registry.setdefault(kind.plural, {})
                    self._call(kind, impl, entries)
        for kind in kinds:
            self.registry.setdefault(kind.plural, {})

    def _withdraw(self, record: PluginRecord) -> None:
        for plural, names in record.registered.items():
            for name in names:
                self.registry[plural].pop(name, None)
        record.registered = {}

    def _call(
        self,
        kind: RegistryKind,
        impl: pluggy.HookImpl,
        entries: dict[str, tuple[Any, str]],
    ) -> None:
        record = self.records[impl.plugin_name]

        def register(obj: Any) -> None:
            if not kind.check(obj):
                self.report(
                    f"{record.origin} registered {obj!r} with {kind.hook}, which "
                    f"expects {kind.expected}",
                    "it was skipped",
                )
                return
            name = kind.key(obj)
            if name in entries:
                first = self.records[entries[name][1]]
                self.report(
                    f"{record.origin} registers {_singular(kind.plural)} "
                    f"{name!r}, which {first.origin} already registered",
                    "the first registration wins, so this one is ignored",
                )
                return
            entries[name] = (obj, record.name)
            record.registered.setdefault(kind.plural, []).append(name)

        try:
            impl.function(register=register)
        except PluginError:
            raise
        except Exception as error:
            record.status = "failed"
            record.error = f"{type(error).__name__}: {error}"
            self._withdraw(record)
            self.report(
                f"{record.origin} failed in {kind.hook}: {record.error}",
                "nothing it registers is used",
                cause=error,
            )


def _singular(plural: str) -> str:
    """The singular of a registry's plural: "losses" to "loss", "models" to
    "model"."""
    if plural.endswith("sses"):
        return plural[:-2]
    return plural.removesuffix("s")


def _disabled_names(disable: Iterable[str]) -> set[str]:
    names = {name.strip() for name in disable if name.strip()}
    names |= {
        name.strip()
        for name in os.environ.get(DISABLE_ENV, "").split(",")
        if name.strip()
    }
    return names


def _load_order(entry_points: Sequence[importlib.metadata.EntryPoint]) -> list[Any]:
    def sort_key(entry_point: importlib.metadata.EntryPoint) -> tuple[int, str, str]:
        distribution = entry_point.dist.name if entry_point.dist else ""
        return (distribution != PROJECT_DISTRIBUTION, distribution, entry_point.name)

    return sorted(entry_points, key=sort_key)


def load_plugins(
    *,
    disable: Iterable[str] = (),
    strict: bool | None = None,
    extra: Iterable[object] = (),
) -> PluginHost:
    """Discover, load and collect every plugin.

    Args:
        disable: entry-point or distribution names to skip, in addition to
            those in ``$GENLATENT_DISABLE_PLUGINS``.
        strict: raise PluginError on the first plugin problem instead of
            warning; defaults to ``$GENLATENT_STRICT_PLUGINS``.
        extra: plugin objects or modules to register after the entry points,
            for plugins defined in a notebook or a test. Each is named by its
            ``__name__`` attribute, or by its class name.
    """
    from genlatent import defaults

    if strict is None:
        strict = os.environ.get(STRICT_ENV, "").lower() in ("1", "true", "yes")
    manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
    manager.add_hookspecs(hookspecs)
    host = PluginHost(manager, strict)
    disabled = _disabled_names(disable)

    version = importlib.metadata.version(PROJECT_DISTRIBUTION)
    host.add(
        defaults,
        PluginRecord(CORE_PLUGIN_NAME, PROJECT_DISTRIBUTION, version, builtin=True),
    )

    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    for entry_point in _load_order(list(found)):
        distribution = entry_point.dist.name if entry_point.dist else None
        record = PluginRecord(
            name=entry_point.name,
            distribution=distribution,
            version=entry_point.dist.version if entry_point.dist else None,
            builtin=distribution == PROJECT_DISTRIBUTION,
        )
        if entry_point.name in host.records:
            host.report(
                f"{record.origin} uses the entry-point name {entry_point.name!r}, "
                f"which {host.records[entry_point.name].origin} already uses",
                "it was skipped",
            )
            continue
        if entry_point.name in disabled or distribution in disabled:
            record.status = "disabled"
            host.records[record.name] = record
            continue
        try:
            plugin = entry_point.load()
        except Exception as error:
            record.status = "failed"
            record.error = f"{type(error).__name__}: {error}"
            host.records[record.name] = record
            host.report(
                f"{record.origin} failed to import: {record.error} "
                f"(disable it with {DISABLE_ENV}={entry_point.name})",
                "it was skipped",
                cause=error,
            )
            continue
        host.add(plugin, record)
    for plugin in extra:
        name = getattr(plugin, "__name__", type(plugin).__name__)
        host.add(plugin, PluginRecord(name, None, None, builtin=False))
    host.collect()
    # Configs name code kinds, and LatentSpec.from_config reads them from the
    # latent module, so callers without a host still see the plugins' kinds.
    set_code_kinds(host.code_kinds())
    return host
