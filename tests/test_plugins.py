"""Plugin discovery with real throwaway distributions.

A throwaway distribution is a folder that looks like an installed package to
importlib.metadata: plugin modules next to a ``NAME-VERSION.dist-info`` folder
with ``METADATA`` and an ``entry_points.txt`` that has a ``[genlatent]``
section. Putting the folder on ``sys.path`` (in-process) or ``PYTHONPATH`` (in
a subprocess) installs it without pip, so discovery runs unmocked.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from genlatent import load_plugins
from genlatent.errors import PluginError, UnknownNameError
from genlatent.plugins import DISABLE_ENV, ENTRY_POINT_GROUP, STRICT_ENV

from .conftest import requires_fashion_mnist

# The console script installed next to the interpreter that runs the tests.
GENLATENT_COMMAND = Path(sys.executable).with_name("genlatent")

# Seconds one command may run before the test fails. A two-step run on
# Fashion-MNIST took 15 s when measured on a 2-core CPU machine without a GPU.
COMMAND_TIMEOUT_S = 300

GENLATENT_VERSION = importlib.metadata.version("genlatent")
BUILTIN_ORIGIN = f"plugin 'infogan' (distribution genlatent {GENLATENT_VERSION})"

# Overrides that keep a training run to a few seconds.
QUICK_RUN = [
    "trainer.max_steps=2",
    "trainer.log_every=1",
    "trainer.batch_size=16",
    "trainer.progress=false",
    "wandb.mode=disabled",
]


# ---------------------------------------------------------------------------
# Helpers.


def write_distribution(
    site: Path,
    name: str,
    entry_points: Mapping[str, str],
    modules: Mapping[str, str],
    version: str = "0.1",
) -> None:
    """Write a distribution into ``site``: its modules and its dist-info folder.

    Args:
        site: the folder that goes on the import path.
        name: the distribution name, as ``METADATA`` spells it.
        entry_points: entry-point name to ``module`` or ``module:attribute``,
            all in the ``genlatent`` group.
        modules: module name to its source code, dedented before writing.
        version: the distribution version.
    """
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        encoding="utf-8",
    )
    lines = [f"[{ENTRY_POINT_GROUP}]"]
    lines += [f"{entry} = {target}" for entry, target in entry_points.items()]
    (dist_info / "entry_points.txt").write_text(
        "\n".join(lines) + "\n", encoding="utf-8"
    )
    # The path finders cache folder listings, and new files must be seen at once.
    importlib.invalidate_caches()


def run_genlatent(
    args: Sequence[str],
    *,
    site: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the ``genlatent`` command with ``site`` on its import path.

    Downloads and wandb are off. The plugin switches of the caller's
    environment are removed, so only ``env`` sets them.
    """
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in (DISABLE_ENV, STRICT_ENV)
    }
    python_path = [str(site)]
    if os.environ.get("PYTHONPATH"):
        python_path.append(os.environ["PYTHONPATH"])
    environment.update(
        PYTHONPATH=os.pathsep.join(python_path),
        WANDB_MODE="disabled",
        GENLATENT_NO_DOWNLOAD="1",
    )
    environment.update(env or {})
    return subprocess.run(
        [str(GENLATENT_COMMAND), *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def parse_list(stdout: str) -> dict[str, dict[str, str]]:
    """Parse ``genlatent list`` output into ``{section: {name: description}}``."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in stdout.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            current = sections.setdefault(line.removesuffix(":"), {})
        elif line.strip():
            name, _, description = line.strip().partition(" ")
            current[name] = description.strip()
    return sections


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Records of a run folder's ``metrics.jsonl``."""
    text = (run_dir / "metrics.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def plugin_record(records: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The record of plugin ``name`` in ``genlatent plugins --json`` output."""
    matches = [record for record in records if record["name"] == name]
    assert len(matches) == 1, f"expected one record named {name!r} in {records}"
    return matches[0]


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty folder on ``sys.path`` for throwaway distributions.

    Afterwards the folder leaves ``sys.path`` and every module imported from it
    leaves ``sys.modules``, so later tests see only the installed plugins.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.delenv(STRICT_ENV, raising=False)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        for module_name, module in list(sys.modules.items()):
            module_file = getattr(module, "__file__", None)
            if module_file and Path(module_file).is_relative_to(site):
                del sys.modules[module_name]
        importlib.invalidate_caches()


# ---------------------------------------------------------------------------
# Plugin sources.

# A third-party plugin: an L2 penalty on generated images and an experiment
# that trains with it.
IMAGE_L2_PLUGIN = '''
    """Image L2 penalty for genlatent, with a Fashion-MNIST experiment."""

    import attrs

    from genlatent import ExperimentConfig, hookimpl
    from genlatent.config import DataConfig, non_negative
    from genlatent.regularizers import Regularizer, RegularizerTerm
    from genlatent_infogan.experiments import mnist_latent


    @attrs.define
    class ImageL2Config:
        weight: float = attrs.field(default=0.01, validator=non_negative)


    class ImageL2(Regularizer):
        """Penalises the mean squared pixel value of generated images."""

        name = "image_l2"
        config_class = ImageL2Config
        description = "L2 penalty on generated images"

        def generator_term(self, batch):
            mean_square = batch.images.pow(2).mean()
            return RegularizerTerm(
                self.config.weight * mean_square,
                {"image_l2/mean_square": mean_square.detach()},
            )


    @hookimpl
    def register_regularizers(register):
        register(ImageL2)


    @hookimpl
    def register_experiments(register):
        register(
            ExperimentConfig(
                name="l2-fashion",
                description="Fashion-MNIST with an image L2 penalty",
                architecture="infogan-mnist",
                latent=mnist_latent(),
                data=DataConfig(dataset="fashion-mnist"),
                regularizers={"image_l2": ImageL2Config(weight=0.5)},
            )
        )
'''

BROKEN_IMPORT_MESSAGE = "demo_a needs scikit-frobnicate, which is not installed"

BROKEN_PLUGIN = f'''
    """A plugin whose import fails."""

    raise ImportError("{BROKEN_IMPORT_MESSAGE}")
'''

CLASH_PLUGIN = '''
    """A plugin that registers a built-in experiment's name."""

    from genlatent import ExperimentConfig, hookimpl
    from genlatent.config import DataConfig
    from genlatent_infogan.experiments import mnist_latent


    @hookimpl
    def register_experiments(register):
        register(
            ExperimentConfig(
                name="infogan-mnist",
                description="third-party copy that must not replace the built-in",
                architecture="infogan-mnist",
                latent=mnist_latent(),
                data=DataConfig(dataset="fashion-mnist"),
            )
        )
'''


def experiment_plugin(name: str) -> str:
    """Source of a plugin that registers one working experiment, ``name``."""
    return f'''
    """A plugin that registers the experiment {name!r}."""

    from genlatent import ExperimentConfig, hookimpl
    from genlatent.config import DataConfig
    from genlatent_infogan.experiments import mnist_latent
    from genlatent_infogan.mutual_information import MutualInformationConfig


    @hookimpl
    def register_experiments(register):
        register(
            ExperimentConfig(
                name={name!r},
                description="experiment from a third-party plugin",
                architecture="infogan-mnist",
                latent=mnist_latent(),
                data=DataConfig(dataset="fashion-mnist"),
                regularizers={{"mi": MutualInformationConfig()}},
            )
        )
    '''


WRONG_KIND_PLUGIN = '''
    """A plugin that registers a string where an ExperimentConfig belongs."""

    from genlatent import hookimpl
    from genlatent_infogan.experiments import mnist_like


    @hookimpl
    def register_experiments(register):
        register("not-an-experiment")
        register(mnist_like("wrong-kind-valid", "fashion-mnist", "still registered"))
'''

HOOK_ERROR_MESSAGE = "experiment table is corrupt"

RAISING_PLUGIN = f'''
    """A plugin whose register_experiments hook raises."""

    from genlatent import hookimpl


    @hookimpl
    def register_experiments(register):
        raise RuntimeError("{HOOK_ERROR_MESSAGE}")
'''

PARTIAL_EXPERIMENT = "partial-experiment"
PARTIAL_REGULARIZER = "partial_l2"

# The host calls register_experiments before register_regularizers, so the
# regularizer hook runs only if the host goes on after the failure.
# REGULARIZER_HOOK_CALLS records each call of it.
PARTIAL_PLUGIN = f'''
    """A plugin whose register_experiments hook registers one experiment, then
    raises."""

    from genlatent import hookimpl
    from genlatent.regularizers import Regularizer
    from genlatent_infogan.experiments import mnist_like

    REGULARIZER_HOOK_CALLS = []


    class PartialL2(Regularizer):
        name = "{PARTIAL_REGULARIZER}"
        config_class = dict


    @hookimpl
    def register_experiments(register):
        register(mnist_like("{PARTIAL_EXPERIMENT}", "fashion-mnist", "withdrawn"))
        raise RuntimeError("{HOOK_ERROR_MESSAGE}")


    @hookimpl
    def register_regularizers(register):
        REGULARIZER_HOOK_CALLS.append(register)
        register(PartialL2)
'''

LATE_ERROR_MESSAGE = "regularizer table is corrupt"

# register_experiments succeeds and the later register_regularizers raises.
LATE_RAISING_PLUGIN = f'''
    """A plugin whose register_regularizers hook raises after its
    register_experiments hook succeeded."""

    from genlatent import hookimpl
    from genlatent_infogan.experiments import mnist_like


    @hookimpl
    def register_experiments(register):
        register(mnist_like("{PARTIAL_EXPERIMENT}", "fashion-mnist", "withdrawn"))


    @hookimpl
    def register_regularizers(register):
        raise RuntimeError("{LATE_ERROR_MESSAGE}")
'''

BAD_SIGNATURE_PLUGIN = '''
    """A plugin whose hook takes an argument the hook specification lacks."""

    from genlatent import hookimpl


    @hookimpl
    def register_experiments(registry):
        pass
'''


# ---------------------------------------------------------------------------
# A third-party plugin that adds an experiment and a regularizer, through the
# command line and without any change to genlatent.


@pytest.fixture(scope="module")
def image_l2_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("image-l2-site")
    write_distribution(
        site,
        "genlatent-image-l2",
        {"image_l2": "genlatent_image_l2_plugin"},
        {"genlatent_image_l2_plugin": IMAGE_L2_PLUGIN},
    )
    return site


@pytest.fixture(scope="module")
def image_l2_list(image_l2_site: Path) -> subprocess.CompletedProcess[str]:
    return run_genlatent(["list"], site=image_l2_site, cwd=image_l2_site)


@pytest.fixture(scope="module")
def image_l2_plugins_text(image_l2_site: Path) -> subprocess.CompletedProcess[str]:
    return run_genlatent(["plugins"], site=image_l2_site, cwd=image_l2_site)


@pytest.fixture(scope="module")
def image_l2_plugins_json(image_l2_site: Path) -> subprocess.CompletedProcess[str]:
    return run_genlatent(["plugins", "--json"], site=image_l2_site, cwd=image_l2_site)


@pytest.fixture(scope="module")
def image_l2_run(
    image_l2_site: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    run_dir = tmp_path_factory.mktemp("image-l2-run") / "run"
    result = run_genlatent(
        [
            "run",
            "l2-fashion",
            *QUICK_RUN,
            "image_l2.weight=0.25",
            "--out",
            str(run_dir),
        ],
        site=image_l2_site,
        cwd=run_dir.parent,
    )
    return result, run_dir


def test_list_exits_zero(image_l2_list: subprocess.CompletedProcess[str]) -> None:
    assert image_l2_list.returncode == 0, image_l2_list.stderr


def test_list_shows_plugin_experiment(
    image_l2_list: subprocess.CompletedProcess[str],
) -> None:
    experiments = parse_list(image_l2_list.stdout)["experiments"]
    assert experiments.get("l2-fashion") == "Fashion-MNIST with an image L2 penalty"


def test_list_shows_plugin_regularizer(
    image_l2_list: subprocess.CompletedProcess[str],
) -> None:
    regularizers = parse_list(image_l2_list.stdout)["regularizers"]
    assert regularizers.get("image_l2") == "L2 penalty on generated images"


def test_list_keeps_builtins(image_l2_list: subprocess.CompletedProcess[str]) -> None:
    experiments = parse_list(image_l2_list.stdout)["experiments"]
    assert {"infogan-mnist", "infogan-fashion-mnist"} <= set(experiments)


def test_list_no_warnings(image_l2_list: subprocess.CompletedProcess[str]) -> None:
    assert image_l2_list.stderr == ""


def test_plugins_text_names_distribution(
    image_l2_plugins_text: subprocess.CompletedProcess[str],
) -> None:
    lines = image_l2_plugins_text.stdout.splitlines()
    assert "image_l2 (genlatent-image-l2 0.1, third-party): loaded" in lines


def test_plugins_text_lists_registrations(
    image_l2_plugins_text: subprocess.CompletedProcess[str],
) -> None:
    lines = image_l2_plugins_text.stdout.splitlines()
    start = lines.index("image_l2 (genlatent-image-l2 0.1, third-party): loaded")
    details = lines[start + 1 : start + 3]
    assert sorted(details) == ["  experiments: l2-fashion", "  regularizers: image_l2"]


def test_plugins_json_record(
    image_l2_plugins_json: subprocess.CompletedProcess[str],
) -> None:
    record = plugin_record(json.loads(image_l2_plugins_json.stdout), "image_l2")
    assert record == {
        "name": "image_l2",
        "distribution": "genlatent-image-l2",
        "version": "0.1",
        "builtin": False,
        "status": "loaded",
        "error": None,
        "registered": {"experiments": ["l2-fashion"], "regularizers": ["image_l2"]},
    }


@requires_fashion_mnist
@pytest.mark.realdata
def test_run_plugin_experiment_exits_zero(
    image_l2_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, _ = image_l2_run
    assert result.returncode == 0, result.stderr


@requires_fashion_mnist
@pytest.mark.realdata
def test_run_plugin_experiment_logs_steps(
    image_l2_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, run_dir = image_l2_run
    assert [record["step"] for record in read_metrics(run_dir)] == [1, 2]


@requires_fashion_mnist
@pytest.mark.realdata
def test_run_logs_regularizer_metric(
    image_l2_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, run_dir = image_l2_run
    for record in read_metrics(run_dir):
        assert record["image_l2/mean_square"] > 0, record


@requires_fashion_mnist
@pytest.mark.realdata
def test_run_weights_regularizer_term(
    image_l2_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, run_dir = image_l2_run
    # The generator-side loss of the term is the override's weight times the
    # metric, at each logged step.
    for record in read_metrics(run_dir):
        expected = 0.25 * record["image_l2/mean_square"]
        assert math.isclose(record["g_loss/image_l2"], expected, rel_tol=1e-5), record


@requires_fashion_mnist
@pytest.mark.realdata
def test_run_config_records_override(
    image_l2_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, run_dir = image_l2_run
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    assert config["regularizers"] == {"image_l2": {"weight": 0.25}}


# ---------------------------------------------------------------------------
# Three third-party distributions at once: A fails to import, B registers the
# built-in experiment name infogan-mnist, and C, which loads after B because
# plugins load in order of distribution name, registers toy-c.

BROKEN_DIST = "demo-a-broken"
CLASH_DIST = "demo-b-clash"
TOY_DIST = "demo-c-toy"

BROKEN_WARNING = (
    f"genlatent: WARNING: plugin 'broken_a' (distribution {BROKEN_DIST} 0.1) "
    f"failed to import: ImportError: {BROKEN_IMPORT_MESSAGE} "
    f"(disable it with {DISABLE_ENV}=broken_a); it was skipped"
)
CLASH_WARNING = (
    f"genlatent: WARNING: plugin 'clash_b' (distribution {CLASH_DIST} 0.1) "
    f"registers experiment 'infogan-mnist', which {BUILTIN_ORIGIN} already "
    "registered; the first registration wins, so this one is ignored"
)


def write_three_plugins(site: Path) -> None:
    write_distribution(
        site,
        BROKEN_DIST,
        {"broken_a": "demo_a_broken"},
        {"demo_a_broken": BROKEN_PLUGIN},
    )
    write_distribution(
        site, CLASH_DIST, {"clash_b": "demo_b_clash"}, {"demo_b_clash": CLASH_PLUGIN}
    )
    write_distribution(
        site,
        TOY_DIST,
        {"toy_c": "demo_c_toy"},
        {"demo_c_toy": experiment_plugin("toy-c")},
    )


@pytest.fixture(scope="module")
def three_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("three-site")
    write_three_plugins(site)
    return site


@pytest.fixture(scope="module")
def three_help(three_site: Path) -> subprocess.CompletedProcess[str]:
    return run_genlatent(["--help"], site=three_site, cwd=three_site)


@pytest.fixture(scope="module")
def three_plugins(three_site: Path) -> subprocess.CompletedProcess[str]:
    return run_genlatent(["plugins", "--json"], site=three_site, cwd=three_site)


@pytest.fixture(scope="module")
def three_show(three_site: Path) -> subprocess.CompletedProcess[str]:
    return run_genlatent(["show", "infogan-mnist"], site=three_site, cwd=three_site)


@pytest.fixture(scope="module")
def three_run(
    three_site: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    run_dir = tmp_path_factory.mktemp("toy-c-run") / "run"
    result = run_genlatent(
        ["run", "toy-c", *QUICK_RUN, "--out", str(run_dir)],
        site=three_site,
        cwd=run_dir.parent,
    )
    return result, run_dir


def test_help_exits_zero(three_help: subprocess.CompletedProcess[str]) -> None:
    assert three_help.returncode == 0, three_help.stderr


def test_help_prints_usage(three_help: subprocess.CompletedProcess[str]) -> None:
    assert three_help.stdout.startswith("usage: genlatent")


def test_help_warns_once_per_problem(
    three_help: subprocess.CompletedProcess[str],
) -> None:
    assert len(three_help.stderr.splitlines()) == 2, three_help.stderr


def test_help_broken_warning(three_help: subprocess.CompletedProcess[str]) -> None:
    assert three_help.stderr.splitlines()[0] == BROKEN_WARNING


def test_help_clash_warning(three_help: subprocess.CompletedProcess[str]) -> None:
    assert three_help.stderr.splitlines()[1] == CLASH_WARNING


def test_help_no_traceback(three_help: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in three_help.stderr


@requires_fashion_mnist
@pytest.mark.realdata
def test_run_after_broken_plugin_exits_zero(
    three_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, _ = three_run
    assert result.returncode == 0, result.stderr


@requires_fashion_mnist
@pytest.mark.realdata
def test_run_after_broken_plugin_logs_steps(
    three_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, run_dir = three_run
    assert [record["step"] for record in read_metrics(run_dir)] == [1, 2]


@requires_fashion_mnist
@pytest.mark.realdata
def test_run_after_broken_plugin_warns(
    three_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, _ = three_run
    assert BROKEN_WARNING in result.stderr.splitlines()


def test_show_clash_keeps_builtin(
    three_show: subprocess.CompletedProcess[str],
) -> None:
    config, _ = json.JSONDecoder().raw_decode(three_show.stdout)
    assert config["description"] == (
        "InfoGAN on MNIST: 1 categorical(10) + 2 continuous codes, 62 noise"
    )


def test_show_clash_keeps_builtin_dataset(
    three_show: subprocess.CompletedProcess[str],
) -> None:
    config, _ = json.JSONDecoder().raw_decode(three_show.stdout)
    assert config["data"]["dataset"] == "mnist"


def test_show_clash_warns(three_show: subprocess.CompletedProcess[str]) -> None:
    assert CLASH_WARNING in three_show.stderr.splitlines()


def test_plugins_load_order(three_plugins: subprocess.CompletedProcess[str]) -> None:
    # The core and the built-in plugins first, so a third-party plugin can
    # never take a built-in's name; then third-party ones by distribution name.
    names = [record["name"] for record in json.loads(three_plugins.stdout)]
    assert names == [
        "genlatent.defaults",
        "infogan",
        "losses",
        "vae",
        "broken_a",
        "clash_b",
        "toy_c",
    ]


def test_plugins_broken_failed(
    three_plugins: subprocess.CompletedProcess[str],
) -> None:
    record = plugin_record(json.loads(three_plugins.stdout), "broken_a")
    assert record["status"] == "failed"


def test_plugins_broken_error(three_plugins: subprocess.CompletedProcess[str]) -> None:
    record = plugin_record(json.loads(three_plugins.stdout), "broken_a")
    assert record["error"] == f"ImportError: {BROKEN_IMPORT_MESSAGE}"


def test_plugins_broken_distribution(
    three_plugins: subprocess.CompletedProcess[str],
) -> None:
    record = plugin_record(json.loads(three_plugins.stdout), "broken_a")
    assert record["distribution"] == BROKEN_DIST


def test_plugins_clash_registers_nothing(
    three_plugins: subprocess.CompletedProcess[str],
) -> None:
    record = plugin_record(json.loads(three_plugins.stdout), "clash_b")
    assert record["registered"] == {}


def test_plugins_toy_registers_experiment(
    three_plugins: subprocess.CompletedProcess[str],
) -> None:
    record = plugin_record(json.loads(three_plugins.stdout), "toy_c")
    assert record["registered"] == {"experiments": ["toy-c"]}


def test_disable_env_silences_broken(three_site: Path) -> None:
    result = run_genlatent(
        ["--help"], site=three_site, cwd=three_site, env={DISABLE_ENV: "broken_a"}
    )
    assert result.stderr.splitlines() == [CLASH_WARNING]


@pytest.fixture(
    scope="module",
    params=[
        ["--disable-plugin", "broken_a", "plugins", "--json"],
        ["plugins", "--disable-plugin", "broken_a", "--json"],
    ],
    ids=["before-command", "after-command"],
)
def three_disable_flag(
    request: pytest.FixtureRequest, three_site: Path
) -> subprocess.CompletedProcess[str]:
    return run_genlatent(request.param, site=three_site, cwd=three_site)


def test_disable_flag_exits_zero(
    three_disable_flag: subprocess.CompletedProcess[str],
) -> None:
    assert three_disable_flag.returncode == 0, three_disable_flag.stderr


def test_disable_flag_silences_broken(
    three_disable_flag: subprocess.CompletedProcess[str],
) -> None:
    assert three_disable_flag.stderr.splitlines() == [CLASH_WARNING]


def test_disable_flag_marks_disabled(
    three_disable_flag: subprocess.CompletedProcess[str],
) -> None:
    record = plugin_record(json.loads(three_disable_flag.stdout), "broken_a")
    assert record["status"] == "disabled"


@pytest.fixture(
    scope="module",
    params=["env", "flag", "flag-after-command"],
    ids=[f"{STRICT_ENV}=1", "--strict-plugins", "list --strict-plugins"],
)
def three_strict(
    request: pytest.FixtureRequest, three_site: Path
) -> subprocess.CompletedProcess[str]:
    if request.param == "env":
        return run_genlatent(
            ["list"], site=three_site, cwd=three_site, env={STRICT_ENV: "1"}
        )
    if request.param == "flag":
        return run_genlatent(
            ["--strict-plugins", "list"], site=three_site, cwd=three_site
        )
    return run_genlatent(["list", "--strict-plugins"], site=three_site, cwd=three_site)


def test_strict_exits_nonzero(three_strict: subprocess.CompletedProcess[str]) -> None:
    assert three_strict.returncode != 0


def test_strict_prints_nothing(three_strict: subprocess.CompletedProcess[str]) -> None:
    assert three_strict.stdout == ""


def test_strict_one_error_line(three_strict: subprocess.CompletedProcess[str]) -> None:
    assert len(three_strict.stderr.splitlines()) == 1, three_strict.stderr


def test_strict_error_prefix(three_strict: subprocess.CompletedProcess[str]) -> None:
    assert three_strict.stderr.startswith("genlatent: error: plugin 'broken_a'")


def test_strict_error_names_distribution(
    three_strict: subprocess.CompletedProcess[str],
) -> None:
    assert f"(distribution {BROKEN_DIST} 0.1)" in three_strict.stderr


def test_strict_error_names_import_error(
    three_strict: subprocess.CompletedProcess[str],
) -> None:
    assert f"ImportError: {BROKEN_IMPORT_MESSAGE}" in three_strict.stderr


def test_strict_error_no_traceback(
    three_strict: subprocess.CompletedProcess[str],
) -> None:
    assert "Traceback" not in three_strict.stderr


def test_strict_error_not_skipped(
    three_strict: subprocess.CompletedProcess[str],
) -> None:
    # In strict mode the command stops at the failed plugin instead of going on
    # without it, so an error line stating that it "was skipped" is false.
    assert "skipped" not in three_strict.stderr


def test_strict_error_names_mode(
    three_strict: subprocess.CompletedProcess[str],
) -> None:
    assert three_strict.stderr.rstrip("\n").endswith("(strict plugin mode)")


@pytest.fixture(
    scope="module",
    params=[
        ["--debug", "run", "no-such-experiment"],
        ["run", "no-such-experiment", "--debug"],
    ],
    ids=["before-command", "after-command"],
)
def three_debug_run(
    request: pytest.FixtureRequest, three_site: Path
) -> subprocess.CompletedProcess[str]:
    return run_genlatent(request.param, site=three_site, cwd=three_site)


def test_debug_run_exits_nonzero(
    three_debug_run: subprocess.CompletedProcess[str],
) -> None:
    assert three_debug_run.returncode != 0


def test_debug_run_prints_traceback(
    three_debug_run: subprocess.CompletedProcess[str],
) -> None:
    assert "Traceback (most recent call last):" in three_debug_run.stderr.splitlines()


def test_debug_run_raises_unknown_name(
    three_debug_run: subprocess.CompletedProcess[str],
) -> None:
    last_line = three_debug_run.stderr.splitlines()[-1]
    assert last_line.startswith(
        "genlatent.errors.UnknownNameError: unknown experiment 'no-such-experiment'"
    )


def test_run_unknown_without_debug(three_site: Path) -> None:
    result = run_genlatent(
        ["run", "no-such-experiment"], site=three_site, cwd=three_site
    )
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------
# In-process loading: the same problems through genlatent.load_plugins().


def test_load_plugins_broken_recorded(plugin_site: Path) -> None:
    write_three_plugins(plugin_site)
    host = load_plugins()
    assert host.records["broken_a"].status == "failed"


def test_load_plugins_problems(plugin_site: Path) -> None:
    write_three_plugins(plugin_site)
    host = load_plugins()
    prefix = "genlatent: WARNING: "
    assert host.problems == [
        BROKEN_WARNING.removeprefix(prefix),
        CLASH_WARNING.removeprefix(prefix),
    ]


def test_load_plugins_clash_keeps_builtin(plugin_site: Path) -> None:
    write_three_plugins(plugin_site)
    host = load_plugins()
    assert host.provider("experiments", "infogan-mnist").name == "infogan"


def test_load_plugins_later_plugin_loads(plugin_site: Path) -> None:
    write_three_plugins(plugin_site)
    host = load_plugins()
    assert host.provider("experiments", "toy-c").distribution == TOY_DIST


def test_disable_by_distribution_name(plugin_site: Path) -> None:
    write_three_plugins(plugin_site)
    host = load_plugins(disable=[BROKEN_DIST])
    assert host.records["broken_a"].status == "disabled"


def test_disable_by_distribution_silences(plugin_site: Path) -> None:
    write_three_plugins(plugin_site)
    host = load_plugins(disable=[BROKEN_DIST])
    assert not any(BROKEN_DIST in problem for problem in host.problems)


def test_disable_env_lists_names(
    plugin_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_three_plugins(plugin_site)
    monkeypatch.setenv(DISABLE_ENV, " broken_a , clash_b ")
    host = load_plugins()
    assert host.problems == []


def test_strict_raises_plugin_error(plugin_site: Path) -> None:
    write_three_plugins(plugin_site)
    with pytest.raises(
        PluginError, match=re.escape(f"ImportError: {BROKEN_IMPORT_MESSAGE}")
    ):
        load_plugins(strict=True)


def test_strict_import_error_message(plugin_site: Path) -> None:
    write_three_plugins(plugin_site)
    with pytest.raises(PluginError) as caught:
        load_plugins(strict=True)
    assert str(caught.value) == (
        f"plugin 'broken_a' (distribution {BROKEN_DIST} 0.1) failed to import: "
        f"ImportError: {BROKEN_IMPORT_MESSAGE} (disable it with "
        f"{DISABLE_ENV}=broken_a) (strict plugin mode)"
    )


def test_strict_clash_raises(plugin_site: Path) -> None:
    write_three_plugins(plugin_site)
    with pytest.raises(PluginError, match=re.escape(f"distribution {CLASH_DIST} 0.1")):
        load_plugins(disable=["broken_a"], strict=True)


# ---------------------------------------------------------------------------
# A plugin that registers an object of the wrong kind.


def write_wrong_kind(site: Path) -> None:
    write_distribution(
        site,
        "demo-wrong-kind",
        {"wrong_kind": "demo_wrong_kind"},
        {"demo_wrong_kind": WRONG_KIND_PLUGIN},
    )
    write_distribution(
        site,
        "demo-other",
        {"other": "demo_other"},
        {"demo_other": experiment_plugin("other-experiment")},
    )


def test_wrong_kind_reported(plugin_site: Path) -> None:
    write_wrong_kind(plugin_site)
    host = load_plugins()
    assert host.problems == [
        "plugin 'wrong_kind' (distribution demo-wrong-kind 0.1) registered "
        "'not-an-experiment' with register_experiments, which expects an "
        "ExperimentConfig; it was skipped"
    ]


def test_wrong_kind_keeps_valid_entry(plugin_site: Path) -> None:
    write_wrong_kind(plugin_site)
    host = load_plugins()
    assert "wrong-kind-valid" in host.names("experiments")


def test_wrong_kind_keeps_other_plugin(plugin_site: Path) -> None:
    write_wrong_kind(plugin_site)
    host = load_plugins()
    assert "other-experiment" in host.names("experiments")


def test_wrong_kind_keeps_builtins(plugin_site: Path) -> None:
    write_wrong_kind(plugin_site)
    host = load_plugins()
    assert {"infogan-mnist", "infogan-fashion-mnist"} <= set(host.names("experiments"))


def test_wrong_kind_not_registered(plugin_site: Path) -> None:
    write_wrong_kind(plugin_site)
    host = load_plugins()
    assert host.records["wrong_kind"].registered == {
        "experiments": ["wrong-kind-valid"]
    }


def test_wrong_kind_strict_raises(plugin_site: Path) -> None:
    write_wrong_kind(plugin_site)
    with pytest.raises(
        PluginError, match=re.escape("distribution demo-wrong-kind 0.1")
    ):
        load_plugins(strict=True)


def test_wrong_kind_in_cli(plugin_site: Path, tmp_path: Path) -> None:
    write_wrong_kind(plugin_site)
    result = run_genlatent(["list"], site=plugin_site, cwd=tmp_path)
    assert result.stderr.splitlines() == [
        "genlatent: WARNING: plugin 'wrong_kind' (distribution demo-wrong-kind "
        "0.1) registered 'not-an-experiment' with register_experiments, which "
        "expects an ExperimentConfig; it was skipped"
    ]


# ---------------------------------------------------------------------------
# A plugin whose hook raises, and one whose hook does not match its spec.


def write_raising(site: Path) -> None:
    write_distribution(
        site,
        "demo-raising",
        {"raising": "demo_raising"},
        {"demo_raising": RAISING_PLUGIN},
    )
    write_distribution(
        site,
        "demo-other",
        {"other": "demo_other"},
        {"demo_other": experiment_plugin("other-experiment")},
    )


def test_hook_error_reported(plugin_site: Path) -> None:
    write_raising(plugin_site)
    host = load_plugins()
    assert host.problems == [
        "plugin 'raising' (distribution demo-raising 0.1) failed in "
        f"register_experiments: RuntimeError: {HOOK_ERROR_MESSAGE}; nothing it "
        "registers is used"
    ]


def test_hook_error_marks_failed(plugin_site: Path) -> None:
    write_raising(plugin_site)
    host = load_plugins()
    assert host.records["raising"].status == "failed"


def test_hook_error_records_error(plugin_site: Path) -> None:
    write_raising(plugin_site)
    host = load_plugins()
    assert host.records["raising"].error == f"RuntimeError: {HOOK_ERROR_MESSAGE}"


def test_hook_error_keeps_other_plugin(plugin_site: Path) -> None:
    write_raising(plugin_site)
    host = load_plugins()
    assert "other-experiment" in host.names("experiments")


def test_hook_error_keeps_builtins(plugin_site: Path) -> None:
    write_raising(plugin_site)
    host = load_plugins()
    assert {"infogan-mnist", "infogan-fashion-mnist"} <= set(host.names("experiments"))


def test_hook_error_strict_chains_cause(plugin_site: Path) -> None:
    write_raising(plugin_site)
    with pytest.raises(PluginError, match="plugin 'raising'") as caught:
        load_plugins(strict=True)
    assert isinstance(caught.value.__cause__, RuntimeError)


def write_partial(site: Path) -> None:
    write_distribution(
        site,
        "demo-partial",
        {"partial": "demo_partial"},
        {"demo_partial": PARTIAL_PLUGIN},
    )
    write_distribution(
        site,
        "demo-other",
        {"other": "demo_other"},
        {"demo_other": experiment_plugin("other-experiment")},
    )


def test_partial_hook_error_reported(plugin_site: Path) -> None:
    write_partial(plugin_site)
    host = load_plugins()
    assert host.problems == [
        "plugin 'partial' (distribution demo-partial 0.1) failed in "
        f"register_experiments: RuntimeError: {HOOK_ERROR_MESSAGE}; nothing it "
        "registers is used"
    ]


def test_partial_hook_error_marks_failed(plugin_site: Path) -> None:
    write_partial(plugin_site)
    host = load_plugins()
    assert host.records["partial"].status == "failed"


def test_partial_hook_error_withdraws_experiment(plugin_site: Path) -> None:
    write_partial(plugin_site)
    host = load_plugins()
    assert PARTIAL_EXPERIMENT not in host.names("experiments")


def test_partial_hook_error_clears_registered(plugin_site: Path) -> None:
    write_partial(plugin_site)
    host = load_plugins()
    assert host.records["partial"].registered == {}


def test_partial_hook_error_no_regularizer(plugin_site: Path) -> None:
    write_partial(plugin_site)
    host = load_plugins()
    assert PARTIAL_REGULARIZER not in host.names("regularizers")


def test_partial_hook_error_skips_later_hook(plugin_site: Path) -> None:
    write_partial(plugin_site)
    load_plugins()
    assert sys.modules["demo_partial"].REGULARIZER_HOOK_CALLS == []


def test_partial_hook_error_keeps_other_plugin(plugin_site: Path) -> None:
    write_partial(plugin_site)
    host = load_plugins()
    assert "other-experiment" in host.names("experiments")


def write_late_raising(site: Path) -> None:
    write_distribution(
        site,
        "demo-late-raising",
        {"late_raising": "demo_late_raising"},
        {"demo_late_raising": LATE_RAISING_PLUGIN},
    )


def test_late_hook_error_reported(plugin_site: Path) -> None:
    write_late_raising(plugin_site)
    host = load_plugins()
    assert host.problems == [
        "plugin 'late_raising' (distribution demo-late-raising 0.1) failed in "
        f"register_regularizers: RuntimeError: {LATE_ERROR_MESSAGE}; nothing it "
        "registers is used"
    ]


def test_late_hook_error_withdraws_earlier(plugin_site: Path) -> None:
    write_late_raising(plugin_site)
    host = load_plugins()
    assert PARTIAL_EXPERIMENT not in host.names("experiments")


def test_late_hook_error_clears_registered(plugin_site: Path) -> None:
    write_late_raising(plugin_site)
    host = load_plugins()
    assert host.records["late_raising"].registered == {}


SHARED_EXPERIMENT = "shared-experiment"


def write_clash_then_failure(site: Path) -> None:
    # demo-a-first sorts before demo-b-second, so "first" loads first.
    write_distribution(
        site,
        "demo-a-first",
        {"first": "demo_first"},
        {
            "demo_first": f'''
                from genlatent import hookimpl
                from genlatent_infogan.experiments import mnist_like


                @hookimpl
                def register_experiments(register):
                    name = "{SHARED_EXPERIMENT}"
                    register(mnist_like(name, "fashion-mnist", "first"))


                @hookimpl
                def register_regularizers(register):
                    raise RuntimeError("first fails late")
            '''
        },
    )
    write_distribution(
        site,
        "demo-b-second",
        {"second": "demo_second"},
        {
            "demo_second": f'''
                from genlatent import hookimpl
                from genlatent_infogan.experiments import mnist_like


                @hookimpl
                def register_experiments(register):
                    name = "{SHARED_EXPERIMENT}"
                    register(mnist_like(name, "fashion-mnist", "second"))
            '''
        },
    )


def test_failed_plugin_frees_its_names(plugin_site: Path) -> None:
    # A plugin that fails after registering a name must not block a later
    # plugin that registers the same name.
    write_clash_then_failure(plugin_site)
    host = load_plugins()
    assert SHARED_EXPERIMENT in host.names("experiments")
    assert host.provider("experiments", SHARED_EXPERIMENT).name == "second"
    assert host.get("experiments", SHARED_EXPERIMENT).description == "second"
    assert len(host.problems) == 1


def write_bad_signature(site: Path) -> None:
    write_distribution(
        site,
        "demo-bad-signature",
        {"bad_signature": "demo_bad_signature"},
        {"demo_bad_signature": BAD_SIGNATURE_PLUGIN},
    )


def test_bad_signature_marks_failed(plugin_site: Path) -> None:
    write_bad_signature(plugin_site)
    host = load_plugins()
    assert host.records["bad_signature"].status == "failed"


def test_bad_signature_reported(plugin_site: Path) -> None:
    write_bad_signature(plugin_site)
    host = load_plugins()
    [problem] = host.problems
    # The middle of the message is pluggy's PluginValidationError text, which
    # genlatent does not control, so only genlatent's prefix and suffix are
    # compared.
    assert problem.startswith(
        "plugin 'bad_signature' (distribution demo-bad-signature 0.1) is invalid: "
        "PluginValidationError: "
    )
    assert "'registry'" in problem
    assert problem.endswith("; it was skipped")


def test_duplicate_entry_point_name_skipped(plugin_site: Path) -> None:
    for distribution in ("demo-first", "demo-second"):
        module = distribution.replace("-", "_")
        write_distribution(
            plugin_site,
            distribution,
            {"shared_name": module},
            {module: experiment_plugin(f"{distribution}-experiment")},
        )
    host = load_plugins()
    assert host.problems == [
        "plugin 'shared_name' (distribution demo-second 0.1) uses the entry-point "
        "name 'shared_name', which plugin 'shared_name' (distribution demo-first "
        "0.1) already uses; it was skipped"
    ]


# ---------------------------------------------------------------------------
# Strict mode: each problem above raises PluginError. Loading stops there, so
# the message states the problem without its warning's consequence clause.

# The clauses that end non-strict warnings.
WARNING_CONSEQUENCES = [
    "it was skipped",
    "nothing it registers is used",
    "the first registration wins, so this one is ignored",
]

STRICT_CASES = {
    "import-error": (write_three_plugins, []),
    "clash": (write_three_plugins, ["broken_a"]),
    "wrong-kind": (write_wrong_kind, []),
    "hook-error": (write_raising, []),
    "partial-hook-error": (write_partial, []),
    "late-hook-error": (write_late_raising, []),
    "bad-signature": (write_bad_signature, []),
}


@pytest.fixture(params=list(STRICT_CASES), ids=list(STRICT_CASES))
def strict_message(request: pytest.FixtureRequest, plugin_site: Path) -> str:
    """The PluginError message of one problem case in strict mode."""
    write_plugins, disable = STRICT_CASES[request.param]
    write_plugins(plugin_site)
    with pytest.raises(PluginError) as caught:
        load_plugins(disable=disable, strict=True)
    return str(caught.value)


def test_strict_message_not_skipped(strict_message: str) -> None:
    assert "skipped" not in strict_message


def test_strict_message_no_consequence(strict_message: str) -> None:
    for consequence in WARNING_CONSEQUENCES:
        assert consequence not in strict_message, consequence


def test_strict_message_names_mode(strict_message: str) -> None:
    assert strict_message.endswith("(strict plugin mode)")


# ---------------------------------------------------------------------------
# The in-process API without third-party plugins.


def test_load_plugins_builtin_experiments(plugin_site: Path) -> None:
    host = load_plugins()
    assert {"infogan-mnist", "infogan-fashion-mnist"} <= set(host.names("experiments"))


def test_load_plugins_no_problems(plugin_site: Path) -> None:
    host = load_plugins()
    assert host.problems == []


def test_get_misspelled_raises(plugin_site: Path) -> None:
    host = load_plugins()
    with pytest.raises(UnknownNameError):
        host.get("experiments", "infogan-mnsit")


def test_get_misspelled_suggests(plugin_site: Path) -> None:
    host = load_plugins()
    with pytest.raises(UnknownNameError) as caught:
        host.get("experiments", "infogan-mnsit")
    assert "did you mean 'infogan-mnist'?" in str(caught.value)


def test_experiment_returns_copy(plugin_site: Path) -> None:
    host = load_plugins()
    host.experiment("infogan-mnist").trainer.max_steps = 1
    assert host.experiment("infogan-mnist").trainer.max_steps == 5000


# ---------------------------------------------------------------------------
# The model plugin of the README's "Writing a new model plugin" section,
# installed verbatim as a third-party distribution.

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_model_plugin() -> str:
    """The first Python block after the README's model-plugin heading."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Writing a new model plugin", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def model_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("model-site")
    write_distribution(
        site,
        "genlatent-regression",
        {"regression": "genlatent_regression_plugin"},
        {"genlatent_regression_plugin": readme_model_plugin()},
    )
    return site


@requires_fashion_mnist
@pytest.mark.realdata
def test_readme_model_plugin_trains_and_traverses(
    model_site: Path, tmp_path: Path
) -> None:
    listed = run_genlatent(["list"], site=model_site, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "regression" in parse_list(listed.stdout)["models"]
    run_dir = tmp_path / "run"
    result = run_genlatent(
        ["run", "regression-fashion", *QUICK_RUN, "--out", str(run_dir)],
        site=model_site,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    records = read_metrics(run_dir)
    assert [record["step"] for record in records] == [1, 2]
    assert all(math.isfinite(record["mse"]) for record in records)
    traversed = run_genlatent(
        ["traverse", str(run_dir), "--rows", "1"], site=model_site, cwd=tmp_path
    )
    assert traversed.returncode == 0, traversed.stderr
    assert (run_dir / "traversals" / "c1.png").is_file()
