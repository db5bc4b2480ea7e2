"""Defaults live once: the settings dataclasses hold them; the node's parameter table, the config files and README's
parameter table agree with them, and the checks (dposer_ros/defaults.py) report drift."""

from dataclasses import dataclass, fields, make_dataclass
from pathlib import Path

from dposer_ros.defaults import BEGIN, END, node_params_drift, readme_table_drift, render_readme_table, same, update_readme, yaml_drift
from dposer_ros.ros.core import CoreSettings
from dposer_ros.ros.params import BY_NAME, PARAMETERS, build_parameters
from dposer_ros.solvers.refine import RefineSettings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NODE_CONFIG = ROOT / "config" / "refine.yaml"
SOLVER_CONFIG = ROOT / "config" / "solvers" / "refine.yaml"


@dataclass(frozen=True)
class DriftedSettings(RefineSettings):
    prior_weight: float = RefineSettings.prior_weight + 1.0


def test_shipped_files_do_not_drift():
    assert yaml_drift(SOLVER_CONFIG) == []
    assert node_params_drift(NODE_CONFIG) == []
    assert readme_table_drift(README.read_text()) == []


def test_a_changed_dataclass_default_is_reported_everywhere():
    drifted = build_parameters(DriftedSettings())
    assert {p.name: p.default for p in drifted}["prior_weight"] == DriftedSettings().prior_weight
    for messages in (readme_table_drift(README.read_text(), drifted), node_params_drift(NODE_CONFIG, drifted),
                     yaml_drift(SOLVER_CONFIG, DriftedSettings)):
        assert len(messages) == 1 and "prior_weight" in messages[0], messages
    assert update_readme(README.read_text(), drifted) != README.read_text()


def test_a_new_field_missing_from_the_solver_yaml_is_reported():
    extended = make_dataclass("Extended", [("new_knob", float, 1.0)], bases=(RefineSettings,), frozen=True)
    assert yaml_drift(SOLVER_CONFIG, extended) == [f"{SOLVER_CONFIG}: `new_knob` missing (default 1.0)"]


def test_readme_rows_with_several_names_are_compared_numerically():
    def table(row: str) -> str:
        return f"{BEGIN}\n| parameter | default | range | |\n|---|---|---|---|\n{row}\n{END}\n"

    params = [BY_NAME["t_max"], BY_NAME["t_min"], BY_NAME["publish_mesh"]]
    t_max, t_min, mesh = (p.default for p in params)
    good = f"| `t_max`, `t_min`, `publish_mesh` | `{t_max}`, `{t_min:.3f}`, `{str(mesh).lower()}` | | |"
    assert readme_table_drift(table(good), params) == []
    assert readme_table_drift(table(f"| `t_max`, `t_min` | `{t_max + 0.1}`, `{t_min}` | | |"), params) == [
        f"README: `publish_mesh` missing (default {mesh!r})",
        f"README: `t_max` is {t_max + 0.1!r}, the default is {t_max!r}"]
    assert readme_table_drift(table(f"| `t_max`, `t_min` | `{t_max}` | | |"), params)[0].startswith("README: row t_max")
    assert readme_table_drift("no table", params) == [f"README: no parameter table between {BEGIN} and {END}"]
    assert same(10.0, 10) and same(10.0, "10") and not same(10.0, 10, exact_type=True) and not same(True, 1)
    assert same([0.0, 1.0], [0, 1]) and not same([0.0], [0.0, 1.0]) and same("", "") and not same("a", 1)


def test_node_parameter_defaults_are_the_dataclass_defaults():
    solver, node = RefineSettings(), CoreSettings()
    shared = [(f.name, getattr(solver, f.name)) for f in fields(solver) if f.name in BY_NAME]
    shared += [(f.name, getattr(node, f.name)) for f in fields(node) if f.name in BY_NAME]
    assert {"steps", "t_max", "prior_weight", "person_timeout", "max_batch", "max_bone_ratio"} <= {n for n, _ in shared}
    for name, default in shared:
        assert same(default, BY_NAME[name].default, exact_type=True), name
    assert PARAMETERS == build_parameters()


def test_readme_generator_is_idempotent():
    text = README.read_text()
    assert update_readme(text) == text
    assert update_readme(update_readme(text)) == update_readme(text)
    assert render_readme_table() in text


def test_quoted_result_tables_are_the_results_files():
    """README, RESULTS and the model card quote result tables generated from the runs' results.json
    (scripts/gen_results_tables.py); a hand edit or a re-run without regenerating fails here."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, str(root / "scripts" / "gen_results_tables.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_hand_edited_result_table_is_caught():
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("gen_results_tables", root / "scripts" / "gen_results_tables.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = (root / "README.md").read_text()
    block = gen.BLOCK.search(text)
    assert block is not None, "README quotes no generated result table"
    edited = text.replace(block.group(3), block.group(3).replace("|", "| 1", 1))
    regenerate = lambda t: gen.BLOCK.sub(lambda m: m.group(1) + gen.render(m.group(2)) + m.group(4), t)  # noqa: E731
    assert regenerate(edited) != edited and regenerate(text) == text
