"""Search spaces of ``tune.py``: the YAML format, its validation, and suggestion.

Format (``configs/search/<method>.yaml``)::

    fixed:                      # optional, applied to every trial as --<key>=<value>
      model.wsol_method: acol
    parameters:                 # float (low, high, log OR step), int (low, high, step or log), categorical
      model.acol_threshold: {type: float, low: 0.0, high: 1.0}
      model.lr: {type: float, low: 1.0e-4, high: 1.0, log: true}
      data.batch_size: {type: categorical, choices: [32, 64]}

Names are ``model.<arg>`` / ``data.<arg>`` (arguments of :class:`WSOLModule` /
:class:`WSOLDataModule`); a bare name (``bg_grid_size``) is resolved to
``model.*`` first, then ``data.*``. Everything is checked before any trial runs;
a problem is a one-line :class:`WSOLInputError` naming the file and the parameter.
Method hyperparameters must stay inside their valid range
(:func:`~wsol_lightning.models.methods.registry.all_hyperparameters`).

The Optuna parameter name of ``model.bg_grid_size`` is its bare name
(``bg_grid_size``) so plots and ``best_params`` read like the classic example;
a data argument keeps its prefix only if the bare name is ambiguous.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from wsol_lightning.errors import WSOLInputError

#: Arguments of the module/data module that are not hyperparameters (set by the CLI, not searchable).
NOT_SEARCHABLE = {"model.num_classes"}
TYPES = ("float", "int", "categorical")


def known_arguments() -> Dict[str, Any]:
    """``{"model.lr": default, "data.batch_size": default, ...}`` from the two signatures."""
    from wsol_lightning.data.datamodule import WSOLDataModule
    from wsol_lightning.module import WSOLModule

    known: Dict[str, Any] = {}
    for prefix, cls in (("model", WSOLModule), ("data", WSOLDataModule)):
        for parameter in inspect.signature(cls.__init__).parameters.values():
            if parameter.name == "self" or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                continue
            known[f"{prefix}.{parameter.name}"] = parameter.default
    return known


def resolve_name(name: str, where: str = "") -> str:
    """``bg_grid_size`` -> ``model.bg_grid_size``; ``data.batch_size`` stays; unknown -> one-line error."""
    known = known_arguments()
    prefix = f"{where}: " if where else ""
    if not isinstance(name, str) or not name:
        raise WSOLInputError(f"{prefix}parameter name {name!r} must be a non-empty string")
    if name in known:
        full = name
    elif "." not in name and f"model.{name}" in known:
        full = f"model.{name}"
    elif "." not in name and f"data.{name}" in known:
        full = f"data.{name}"
    else:
        bare = sorted({key.split(".", 1)[1] for key in known if key not in NOT_SEARCHABLE})
        raise WSOLInputError(f"{prefix}{name}: unknown parameter (model.* or data.* argument); known: "
                             f"{', '.join(bare)}")
    if full in NOT_SEARCHABLE:
        raise WSOLInputError(f"{prefix}{full}: not a hyperparameter (set by the data module)")
    return full


def optuna_name(full: str) -> str:
    """Name of a parameter in Optuna: the bare name (``model.lr`` -> ``lr``), prefixed if ambiguous."""
    bare = full.split(".", 1)[1]
    other = ("data." if full.startswith("model.") else "model.") + bare
    return full if other in known_arguments() else bare


@dataclass
class Param:
    """One searched parameter (``name`` is the full ``model.x`` / ``data.x`` name)."""

    name: str
    type: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Tuple[Any, ...] = ()

    @property
    def key(self) -> str:
        """The parameter's name in Optuna (trial params, plots)."""
        return optuna_name(self.name)

    def suggest(self, trial) -> Any:
        """Draw this parameter for ``trial`` (an ``optuna.Trial``)."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_categorical(self.key, list(self.choices))

    def parse_value(self, text: str, where: str) -> Any:
        """Convert ``text`` (``--enqueue`` value) to this parameter's type and check it is in the space."""
        try:
            if self.type == "float":
                value: Any = float(text)
            elif self.type == "int":
                value = int(text)
            else:
                matches = [c for c in self.choices if str(c) == text or _same_number(c, text)]
                if not matches:
                    raise ValueError
                value = matches[0]
        except ValueError:
            expected = f"one of {list(self.choices)}" if self.type == "categorical" else f"a{'n' if self.type == 'int' else ''} {self.type}"
            raise WSOLInputError(f"{where}: {self.key}={text!r} must be {expected}") from None
        if self.type != "categorical" and not (self.low <= value <= self.high):
            raise WSOLInputError(f"{where}: {self.key}={value} is outside the search range "
                                 f"[{self.low}, {self.high}]")
        return value

    def grid(self, points: int) -> List[Any]:
        """Values of this parameter in a grid search: choices, the step lattice, or ``points`` spaced values."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            step = int(self.step or 1)
            values = list(range(int(self.low), int(self.high) + 1, step))
            if len(values) <= points or self.step:
                return values
            return sorted({int(round(v)) for v in _spaced(self.low, self.high, points, self.log)})
        if self.step:
            count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
            return [round(self.low + i * self.step, 12) for i in range(count)]
        return _spaced(self.low, self.high, points, self.log)

    def describe(self) -> str:
        """``bg_grid_size ~ U(0.0, 1.0)``-style one-liner."""
        if self.type == "categorical":
            return f"{self.key} in {list(self.choices)}"
        kind = "LogU" if self.log else ("U" if self.type == "float" else "int U")
        step = f" step {self.step}" if self.step else ""
        return f"{self.key} ~ {kind}({self.low}, {self.high}){step}"


def _same_number(choice: Any, text: str) -> bool:
    try:
        return not isinstance(choice, (bool, str)) and float(choice) == float(text)
    except (TypeError, ValueError):
        return False


def _spaced(low: float, high: float, points: int, log: bool) -> List[float]:
    if points == 1:
        return [low]
    if log:
        return [float(math.exp(math.log(low) + i * (math.log(high) - math.log(low)) / (points - 1)))
                for i in range(points)]
    return [float(low + i * (high - low) / (points - 1)) for i in range(points)]


@dataclass
class SearchSpace:
    """Fixed arguments plus the searched parameters."""

    parameters: List[Param]
    fixed: Dict[str, Any] = field(default_factory=dict)
    source: str = "default search space"

    def by_key(self, key: str) -> Param:
        """The parameter named ``key`` (Optuna name, bare name or full name)."""
        for param in self.parameters:
            if key in (param.key, param.name):
                return param
        full = resolve_name(key, where="--enqueue")
        for param in self.parameters:
            if param.name == full:
                return param
        raise WSOLInputError(f"--enqueue {key}: not in the search space ({', '.join(p.key for p in self.parameters)})")

    def suggest(self, trial) -> Dict[str, Any]:
        """``{full name: value}`` drawn for ``trial``.

        The values are read back from ``trial.params``: a ``TorchDistributedTrial``'s
        ``suggest_float`` returns a float32, its ``params`` the exact values.
        """
        for param in self.parameters:
            param.suggest(trial)
        params = trial.params
        return {param.name: params[param.key] for param in self.parameters}

    def fixed_args(self) -> List[str]:
        """The ``fixed`` section as CLI arguments."""
        return [f"--{name}={_cli_value(value)}" for name, value in self.fixed.items()]

    def grid(self, points: int) -> Dict[str, List[Any]]:
        """Search space of Optuna's ``GridSampler``."""
        return {param.key: param.grid(points) for param in self.parameters}

    def describe(self) -> str:
        """One line listing the distributions."""
        return "; ".join(param.describe() for param in self.parameters)


def trial_args(values: Mapping[str, Any]) -> List[str]:
    """``{"model.lr": 0.1}`` -> ``["--model.lr=0.1"]``."""
    return [f"--{name}={_cli_value(value)}" for name, value in values.items()]


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def default_search_space() -> SearchSpace:
    """The classic example: ``bg_grid_size ~ U(0, 1)`` and the learning rate log-uniform.

    The learning-rate range, 2e-4 to 0.2, has the optimum of the default
    40-batch trials (lr ~0.002 to 0.004, measured) in its middle: with 0.002 to
    0.2 (the first default) the best trials sat on the lower edge. Above ~0.03
    trials are bad from the first epochs and below ~5e-4 they learn too slowly
    for 40 batches: the pruner stops both early.
    """
    return SearchSpace(parameters=[
        Param("model.bg_grid_size", "float", 0.0, 1.0),
        Param("model.lr", "float", 2e-4, 0.2, log=True),
    ])


def parse_search_space(data: Any, where: str) -> SearchSpace:
    """Validate a loaded YAML mapping (see module docstring); ``where`` names the file in errors."""
    if not isinstance(data, dict):
        raise WSOLInputError(f"{where}: a search space is a mapping with 'parameters' (and optional 'fixed')")
    unknown_sections = sorted(set(data) - {"fixed", "parameters"})
    if unknown_sections:
        raise WSOLInputError(f"{where}: unknown section {unknown_sections[0]!r} (expected 'fixed' and 'parameters')")
    fixed_raw = data.get("fixed") or {}
    if not isinstance(fixed_raw, dict):
        raise WSOLInputError(f"{where}: 'fixed' must be a mapping of name: value")
    fixed = {resolve_name(name, where): value for name, value in fixed_raw.items()}
    raw = data.get("parameters")
    if not isinstance(raw, dict) or not raw:
        raise WSOLInputError(f"{where}: 'parameters' must be a non-empty mapping of name: {{type: ...}}")
    parameters: List[Param] = []
    seen: Dict[str, str] = {}
    for name, spec in raw.items():
        param = _parse_param(name, spec, where)
        if param.name in seen:
            raise WSOLInputError(f"{where}: {name}: declared twice (as {seen[param.name]})")
        if param.name in fixed:
            raise WSOLInputError(f"{where}: {name}: both fixed and searched")
        seen[param.name] = name
        parameters.append(param)
    return SearchSpace(parameters=parameters, fixed=fixed, source=where)


def _parse_param(name: str, spec: Any, where: str) -> Param:
    full = resolve_name(name, where)
    at = f"{where}: {name}"
    if not isinstance(spec, dict):
        raise WSOLInputError(f"{at}: expected {{type: float|int|categorical, ...}}, got {spec!r}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise WSOLInputError(f"{at}: type must be one of {', '.join(TYPES)} (got {kind!r})")
    allowed = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}}[kind]
    extra = sorted(set(spec) - allowed)
    if extra:
        raise WSOLInputError(f"{at}: unknown key {extra[0]!r} for type {kind} (allowed: {', '.join(sorted(allowed))})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, (list, tuple)) or not choices:
            raise WSOLInputError(f"{at}: categorical needs a non-empty list of choices")
        for choice in choices:
            if not (choice is None or isinstance(choice, (bool, int, float, str))):
                raise WSOLInputError(f"{at}: choice {choice!r} must be a number, string, bool or null")
        if len({repr(c) for c in choices}) != len(choices):
            raise WSOLInputError(f"{at}: choices repeat a value")
        param = Param(full, kind, choices=tuple(choices))
    else:
        for key in ("low", "high"):
            value = spec.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise WSOLInputError(f"{at}: {key} must be a finite number (got {value!r})")
            if kind == "int" and not float(value).is_integer():
                raise WSOLInputError(f"{at}: {key} must be an integer for type int (got {value!r})")
        low, high = spec["low"], spec["high"]
        if low >= high:
            raise WSOLInputError(f"{at}: low ({low}) must be < high ({high})")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise WSOLInputError(f"{at}: log must be true or false (got {log!r})")
        step = spec.get("step")
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0:
                raise WSOLInputError(f"{at}: step must be a positive number (got {step!r})")
            if log:
                raise WSOLInputError(f"{at}: use either log or step, not both")
            if kind == "int" and not float(step).is_integer():
                raise WSOLInputError(f"{at}: step must be an integer for type int (got {step!r})")
        if log and low <= 0:
            raise WSOLInputError(f"{at}: log needs low > 0 (got {low})")
        param = Param(full, kind, float(low) if kind == "float" else int(low),
                      float(high) if kind == "float" else int(high), log=log,
                      step=None if step is None else (float(step) if kind == "float" else int(step)))
    _check_against_method_range(param, at)
    return param


def _check_against_method_range(param: Param, at: str) -> None:
    """Method knobs (``bg_grid_size``, ...): the searched values must be valid values."""
    from wsol_lightning.models.methods.registry import all_hyperparameters

    if not param.name.startswith("model."):
        return
    spec = all_hyperparameters().get(param.name.split(".", 1)[1])
    if spec is None:
        return
    low, high = spec.valid
    values = [param.low, param.high] if param.type != "categorical" else list(param.choices)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
            raise WSOLInputError(f"{at}: {value!r} is outside the valid range [{low}, {high}] of {param.name}")


def load_search_space(path: str) -> SearchSpace:
    """Read and validate a search-space YAML file."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise WSOLInputError(f"--search-space {path}: file not found")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        first = str(error).strip().splitlines()
        raise WSOLInputError(f"{path}: not valid YAML ({' '.join(first[:3])})") from None
    return parse_search_space(data, str(path))


def parse_enqueue(items: Sequence[str], space: SearchSpace) -> List[Dict[str, Any]]:
    """``--enqueue bg_grid_size=0.4,lr=0.05`` (repeatable) -> Optuna param dicts, one per flag.

    A flag may set several parameters separated by commas; parameters it leaves
    out are drawn by the sampler.
    """
    trials = []
    for item in items:
        params: Dict[str, Any] = {}
        for part in [p for p in item.split(",") if p.strip()]:
            if "=" not in part:
                raise WSOLInputError(f"--enqueue {item}: expected name=value[,name=value...]")
            name, text = (s.strip() for s in part.split("=", 1))
            param = space.by_key(name)
            params[param.key] = param.parse_value(text, f"--enqueue {item}")
        if not params:
            raise WSOLInputError(f"--enqueue {item!r}: expected name=value")
        trials.append(params)
    return trials
