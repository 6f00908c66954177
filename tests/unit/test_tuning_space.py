"""Search spaces of tune.py: the YAML format, validation before any trial, --enqueue, grids."""

from pathlib import Path

import optuna
import pytest
import yaml

from tests.one_line import one_line_error
from wsol_lightning.errors import WSOLInputError
from wsol_lightning.tuning.space import (default_search_space, load_search_space, parse_enqueue, parse_search_space,
                                         resolve_name, trial_args)

ROOT = Path(__file__).resolve().parents[2]


def space_of(text: str):
    return parse_search_space(yaml.safe_load(text), "s.yaml")


def test_every_method_file_loads():
    files = sorted((ROOT / "configs" / "search").glob("*.yaml"))
    assert files
    for file in files:
        space = load_search_space(str(file))
        assert space.fixed["model.wsol_method"] == file.stem
        assert {p.name for p in space.parameters} >= {"model.lr", "data.batch_size"}


def test_issue_format_types_and_bare_names():
    space = space_of("""
fixed: {model.wsol_method: acol}
parameters:
  acol_threshold: {type: float, low: 0.0, high: 1.0}
  model.lr: {type: float, low: 1.0e-4, high: 1.0, log: true}
  batch_size: {type: categorical, choices: [32, 64]}
  model.lr_decay_frequency: {type: int, low: 1, high: 9, step: 2}
  model.momentum: {type: float, low: 0.5, high: 0.9, step: 0.1}
""")
    assert [p.name for p in space.parameters] == ["model.acol_threshold", "model.lr", "data.batch_size",
                                                  "model.lr_decay_frequency", "model.momentum"]
    assert space.fixed_args() == ["--model.wsol_method=acol"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = space.suggest(trial)
    assert 0 <= values["model.acol_threshold"] <= 1 and 1e-4 <= values["model.lr"] <= 1
    assert values["data.batch_size"] in (32, 64) and values["model.lr_decay_frequency"] in (1, 3, 5, 7, 9)
    assert set(trial.params) == {"acol_threshold", "lr", "batch_size", "lr_decay_frequency", "momentum"}
    args = trial_args(values)
    assert f"--data.batch_size={values['data.batch_size']}" in args
    assert any(a.startswith("--model.lr=") for a in args)


def test_default_space_is_the_classic_example():
    space = default_search_space()
    grid = space.by_key("bg_grid_size")
    assert (grid.name, grid.low, grid.high, grid.log) == ("model.bg_grid_size", 0.0, 1.0, False)
    assert space.by_key("lr").log


@pytest.mark.parametrize("text, message", [
    ("parameters: {nonsense: {type: float, low: 0, high: 1}}", "s.yaml: nonsense: unknown parameter"),
    ("parameters: {bg_grid_size: {type: float, low: 0.5, high: 0.5}}", "low (0.5) must be < high (0.5)"),
    ("parameters: {bg_grid_size: {type: float, low: 0.9, high: 0.1}}", "must be < high"),
    ("parameters: {batch_size: {type: categorical, choices: []}}", "non-empty list of choices"),
    ("parameters: {lr: {type: float, low: 0, high: 1, log: true}}", "log needs low > 0"),
    ("parameters: {lr: {type: normal, low: 0, high: 1}}", "type must be one of"),
    ("parameters: {lr: {type: float, low: 0.1, high: 1, log: true, step: 0.1}}", "either log or step"),
    ("parameters: {lr_decay_frequency: {type: int, low: 1.5, high: 3}}", "must be an integer"),
    ("parameters: {bg_grid_size: {type: float, low: 0.0, high: 2.0}}", "outside the valid range [0.0, 1.0]"),
    ("parameters: {bg_grid_size: {type: float, lo: 0.0, high: 1.0}}", "unknown key 'lo'"),
    ("parameters: {num_classes: {type: int, low: 2, high: 3}}", "not a hyperparameter"),
    ("parameters: {}", "'parameters' must be a non-empty mapping"),
    ("fixed: {nope: 1}\nparameters: {lr: {type: float, low: 0.01, high: 0.1}}", "nope: unknown parameter"),
    ("fixed: {model.lr: 0.1}\nparameters: {lr: {type: float, low: 0.01, high: 0.1}}", "both fixed and searched"),
    ("parametres: {lr: {type: float, low: 0.01, high: 0.1}}", "unknown section 'parametres'"),
])
def test_bad_spaces_are_one_line_errors(text, message):
    assert message in one_line_error(space_of, text)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(WSOLInputError, match="file not found"):
        load_search_space(str(tmp_path / "none.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters: {lr: [unclosed\n")
    with pytest.raises(WSOLInputError, match="not valid YAML"):
        load_search_space(str(bad))


def test_an_unknown_name_lists_the_searchable_ones_only():
    message = one_line_error(resolve_name, "nonsense")
    known = message.split("known: ", 1)[1].split(", ")
    assert {"bg_grid_size", "lr", "batch_size"} <= set(known) and "num_classes" not in known  # refused if named


def test_resolve_name_prefers_model_then_data():
    assert resolve_name("bg_grid_size") == "model.bg_grid_size"
    assert resolve_name("batch_size") == "data.batch_size"
    assert resolve_name("data.batch_size") == "data.batch_size"


def test_enqueue_parses_and_checks_values():
    space = default_search_space()
    assert parse_enqueue(["bg_grid_size=0.4", "bg_grid_size=0.1,lr=0.05"], space) == [
        {"bg_grid_size": 0.4}, {"bg_grid_size": 0.1, "lr": 0.05}]
    assert parse_enqueue(["model.bg_grid_size=0.4"], space) == [{"bg_grid_size": 0.4}]
    with pytest.raises(WSOLInputError, match="outside the search range"):
        parse_enqueue(["bg_grid_size=1.5"], space)
    with pytest.raises(WSOLInputError, match="must be a float"):
        parse_enqueue(["bg_grid_size=big"], space)
    with pytest.raises(WSOLInputError, match="not in the search space"):
        parse_enqueue(["has_drop_rate=0.5"], space)
    with pytest.raises(WSOLInputError, match="expected name=value"):
        parse_enqueue(["0.4"], space)
    categorical = space_of("parameters: {batch_size: {type: categorical, choices: [32, 64]}}")
    assert parse_enqueue(["batch_size=64"], categorical) == [{"batch_size": 64}]


def test_grid_values():
    space = space_of("""
parameters:
  bg_grid_size: {type: float, low: 0.0, high: 1.0}
  lr: {type: float, low: 0.001, high: 0.1, log: true}
  momentum: {type: float, low: 0.5, high: 0.9, step: 0.2}
  batch_size: {type: categorical, choices: [32, 64]}
""")
    grid = space.grid(3)
    assert grid["bg_grid_size"] == [0.0, 0.5, 1.0]
    assert grid["lr"] == pytest.approx([0.001, 0.01, 0.1])
    assert grid["momentum"] == pytest.approx([0.5, 0.7, 0.9])
    assert grid["batch_size"] == [32, 64]
