"""From a file or a mapping to a validated :class:`Scenario`: ``--set`` overrides applied, pydantic's
errors rewritten to name the field as the user wrote it, relative paths made relative to the
scenario file, and the model shape resolved up front so that a bad one stops the run before it starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sunsim.costs import catalog
from sunsim.names import ALLOWED, check_name
from sunsim.scenario.document import Scenario
from sunsim.scenario.limits import ScenarioError
from sunsim.scenario.overrides import apply_override, parse_override
from sunsim.scenario.safe_yaml import read_yaml_mapping


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read, override (``--set``) and validate a scenario file."""
    p = Path(path)
    data = read_yaml_mapping(p, "scenario")
    for text in overrides:
        keypath, value = parse_override(text)
        apply_override(data, keypath, value)
    if "name" not in data:
        try:
            data["name"] = check_name(p.stem, "name")
        except ValueError:
            raise ScenarioError(f"name: the scenario has no name and its file name {p.stem!r} is not a valid "
                                f"one; give name: (allowed: {ALLOWED})") from None
    return scenario_from_dict(data, base_dir=p.parent)


def scenario_from_dict(data: Any, base_dir: Path | None = None) -> Scenario:
    """Validate a parsed mapping (a scenario file's, or a sweep point's); relative paths in it are
    taken relative to ``base_dir`` when given. Any problem is one :class:`ScenarioError` naming the fields."""
    if not isinstance(data, dict):
        raise ScenarioError("invalid scenario: the file must hold a mapping at the top level")
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioError(_format_error(err)) from None
    if base_dir is not None:
        sc = _resolve_paths(sc, base_dir)
    _check_shape(sc)
    return sc


def _check_shape(sc: Scenario) -> None:
    """Resolve the model shape now (reading an ``hf_config``), so a bad one stops the run up front."""
    try:
        sc.model.resolve()
    except ScenarioError:
        raise
    except ValueError as exc:
        where = "model.shape" if sc.model.shape is not None else "model"
        raise ScenarioError(f"invalid scenario:\n  {where}: {exc}") from None


def _resolve_paths(sc: Scenario, base: Path) -> Scenario:
    """Relative trace/profile paths are relative to the scenario file (or, failing that, the cwd)."""

    def fix(p: str) -> str:
        path = Path(p)
        if path.is_absolute() or path.exists():
            return p
        candidate = base / path
        return str(candidate) if candidate.exists() else p

    data = sc.model_dump()
    wl = data["workload"]
    if wl["arrivals"]["kind"] == "trace":
        wl["arrivals"]["path"] = fix(wl["arrivals"]["path"])
    if wl["rate_curve"] is not None and wl["rate_curve"]["kind"] == "piecewise":
        wl["rate_curve"]["path"] = fix(wl["rate_curve"]["path"])
    for dist in [wl["prompt_tokens"], wl["output_tokens"]] + [
        d for lengths in wl["per_model"].values() for d in lengths.values() if d
    ]:
        if dist["kind"] == "trace":
            dist["path"] = fix(dist["path"])
    pools = [data["hardware"], data["prefill"]["hardware"], *(v["hardware"] for v in data["variants"])]
    for hw in pools:
        if hw is not None and catalog.is_path(hw["profile"]):
            hw["profile"] = fix(hw["profile"])
    if data["model"]["hf_config"] is not None:
        data["model"]["hf_config"] = fix(data["model"]["hf_config"])
    return Scenario.model_validate(data)


def _format_error(err: ValidationError) -> str:
    """One line per problem, located as the user wrote it (``workload.rate``, not pydantic's union tags)."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not _is_union_tag(p))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{loc or 'scenario'}: {msg}" + (f" (got {e['input']!r})" if _short(e.get("input")) else ""))
    return "invalid scenario:\n  " + "\n  ".join(lines)


_UNION_TAGS = {"fixed", "uniform", "lognormal", "geometric", "trace", "poisson", "gamma", "zipf", "weights", "diurnal", "piecewise",
               "int", "dict[str,int]", "constrained-int", "dict[str,constrained-int]", "Split"}


def _is_union_tag(part: Any) -> bool:
    """Pydantic names the union member tried (``function-before[...]``); the user never wrote it."""
    return isinstance(part, str) and (part in _UNION_TAGS or "[" in part or part.startswith("constrained-"))


def _short(v: Any) -> bool:
    return isinstance(v, (int, float, str)) and len(repr(v)) < 60
