"""Drift checks: the hand-commented config files and README's parameter table against the code's defaults.

The settings dataclasses hold every default (`RefineSettings` the solver's, `CoreSettings` the node's tracks and
input checks); `ros/params.py` builds the node's parameter table from them. Each `*_drift` function returns
human-readable messages, none when in step. `update_readme` rewrites README's table between the markers
(scripts/gen_param_table.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from .ros.params import PARAMETERS, ParamSpec
from .solvers.refine import RefineSettings

BEGIN, END = "<!-- params:begin -->", "<!-- params:end -->"


def same(expected: Any, got: Any, exact_type: bool = False) -> bool:
    """`got` equals `expected`: numbers numerically (`10` == 10.0, also written as text, unless `exact_type`; NaN
    equals NaN, the mark of an unknown),
    booleans only as booleans, lists element by element."""
    if isinstance(expected, (list, tuple)):
        return (isinstance(got, (list, tuple)) and len(got) == len(expected)
                and all(same(e, g, exact_type) for e, g in zip(expected, got)))
    if isinstance(expected, bool) or isinstance(got, bool):
        return got is expected
    if isinstance(expected, (int, float)):
        if exact_type:
            return type(got) is type(expected) and (got == expected or math.isnan(got) and math.isnan(expected))
        try:
            return float(got) == float(expected) or math.isnan(float(got)) and math.isnan(float(expected))
        except (TypeError, ValueError):
            return False
    return type(got) is type(expected) and got == expected


def _compare(where: str, expected: dict[str, Any], got: dict[str, Any], exact_type: bool = False) -> list[str]:
    """Messages for names missing from / unknown to `got` and values that differ from `expected`."""
    out = [f"{where}: `{k}` missing (default {expected[k]!r})" for k in expected if k not in got]
    out += [f"{where}: `{k}` is not a known setting" for k in got if k not in expected]
    out += [f"{where}: `{k}` is {got[k]!r}, the default is {expected[k]!r}"
            for k in expected if k in got and not same(expected[k], got[k], exact_type)]
    return out


def yaml_drift(path: str | Path, settings_cls: type = RefineSettings) -> list[str]:
    """A flat YAML of `settings_cls` fields (config/solvers/refine.yaml) against the dataclass defaults: every field
    present, every key a field, every value the default."""
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        return [f"{path}: not a mapping"]
    settings = settings_cls()
    return _compare(str(path), {f.name: getattr(settings, f.name) for f in fields(settings)}, data)


def node_params_drift(path: str | Path, parameters: Sequence[ParamSpec] = PARAMETERS) -> list[str]:
    """A ROS params file (config/refine.yaml, `/**: ros__parameters:`) against the parameter table: the same names,
    the same defaults, of the same type (a ROS parameter's type is fixed by its default)."""
    data = yaml.safe_load(Path(path).read_text())
    try:
        params = data["/**"]["ros__parameters"]
    except (TypeError, KeyError):
        return [f"{path}: no /**: ros__parameters: mapping"]
    return _compare(str(path), {p.name: p.default for p in parameters}, params, exact_type=True)


def _cells(row: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


def _value(text: str) -> Any:
    return "" if text == '""' else yaml.safe_load(text)


def _table(readme_text: str) -> str | None:
    """The text between the markers, None without them."""
    start, end = readme_text.find(BEGIN), readme_text.find(END)
    return readme_text[start + len(BEGIN):end] if 0 <= start < end else None


def readme_table_drift(readme_text: str, parameters: Sequence[ParamSpec] = PARAMETERS) -> list[str]:
    """README's parameter table against `parameters`: backticked names in a row's first column (one or several),
    their backticked defaults in the same order in the second; every parameter in exactly one row."""
    table = _table(readme_text)
    if table is None:
        return [f"README: no parameter table between {BEGIN} and {END}"]
    out, got = [], {}
    for row in table.splitlines():
        cells = _cells(row) if row.lstrip().startswith("|") else []
        names = re.findall(r"`([^`]*)`", cells[0]) if cells else []
        if not names:
            continue  # header, separator, blank line
        values = re.findall(r"`([^`]*)`", cells[1]) if len(cells) > 1 else []
        if len(values) != len(names):
            out.append(f"README: row {', '.join(names)} has {len(values)} default(s) for {len(names)} name(s)")
            continue
        for name, value in zip(names, values):
            if name in got:
                out.append(f"README: `{name}` appears twice")
            got[name] = _value(value)
    return out + _compare("README", {p.name: p.default for p in parameters}, got)


def _number(x: float) -> str:
    return f"{x:g}".replace("e+0", "e").replace("e+", "e")


def _default(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_default(x) for x in v) + "]"
    return '""' if v == "" else str(v)


def _range(p: ParamSpec) -> str:
    if p.choices:
        return " / ".join(p.choices)
    return f"{_number(p.range[0])}-{_number(p.range[1])}" if p.range else ""


def render_readme_table(parameters: Sequence[ParamSpec] = PARAMETERS) -> str:
    """README's parameter table (markdown): name | default | range | description, one row per parameter."""
    rows = ["| parameter | default | range | |", "|---|---|---|---|"]
    for p in parameters:
        text = (p.description + (" Read-only." if p.read_only else "")).replace("|", r"\|")
        rows.append(f"| `{p.name}` | `{_default(p.default)}` | {_range(p)} | {text} |")
    return "\n".join(rows)


def update_readme(readme_text: str, parameters: Sequence[ParamSpec] = PARAMETERS) -> str:
    """`readme_text` with the table between the markers rendered from `parameters`."""
    if _table(readme_text) is None:
        raise ValueError(f"no {BEGIN} ... {END} markers")
    start, end = readme_text.index(BEGIN) + len(BEGIN), readme_text.index(END)
    return readme_text[:start] + "\n" + render_readme_table(parameters) + "\n" + readme_text[end:]
