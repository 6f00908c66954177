"""tune.py's Optuna side without training: storages, study creation, budget, seeds, DDP handoff, refusals."""

import json

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from tests.one_line import one_line_error
from wsol_lightning.errors import WSOLInputError
from wsol_lightning.tuning import ddp
from wsol_lightning.tuning.space import default_search_space
from wsol_lightning.tuning.study import (OVER_BUDGET_KEY, budget, create_or_load_study, enqueue_once,
                                         is_over_budget, make_pruner, make_sampler, open_storage, redact,
                                         worker_seed)


def test_sqlite_storage_has_heartbeat_and_retry(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/sub/s.db", heartbeat_interval=2, grace_period=5)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert storage.get_heartbeat_interval() == 2
    assert isinstance(storage.get_heartbeat_stale_trial_callback(), RetryHeartbeatStaleTrialCallback)


def test_journal_storage(tmp_path):
    storage = open_storage(str(tmp_path / "study.log"))
    study, created = create_or_load_study(storage, "j", "maximize")
    assert created and isinstance(storage, optuna.storages.JournalStorage)
    assert isinstance(open_storage(f"journal:{tmp_path}/other.journal"), optuna.storages.JournalStorage)


@pytest.mark.parametrize("url, fragment", [
    ("postgresql://user:secret@127.0.0.1:1/db", "cannot open the storage (OperationalError"),
    ("mysql://user:secret@127.0.0.1:1/db", "cannot open the storage"),
    ("nosuchdriver://x/y", "cannot open the storage"),
    ("study.db", "not an SQLAlchemy URL"),
])
def test_storage_that_cannot_be_opened_is_one_line(url, fragment):
    message = one_line_error(open_storage, url)
    assert message.startswith("--storage ") and fragment in message
    assert "secret" not in message


def test_bare_postgresql_url_uses_the_installed_driver():
    from wsol_lightning.tuning.study import normalize_url

    assert normalize_url("postgresql://u:p@h/d") in ("postgresql://u:p@h/d", "postgresql+psycopg2://u:p@h/d")
    assert normalize_url("postgresql+psycopg2://u:p@h/d") == "postgresql+psycopg2://u:p@h/d"


def test_redact():
    assert redact("postgresql://u:pw@h:5/d") == "postgresql://u:***@h:5/d"
    assert redact("sqlite:///a.db") == "sqlite:///a.db"


def test_study_is_resumed_and_direction_checked(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study, created = create_or_load_study(open_storage(url), "s", "maximize")
    study.enqueue_trial({"x": 1.0})
    again, created_again = create_or_load_study(open_storage(url), "s", "maximize")
    assert created and not created_again and len(again.trials) == 1
    with pytest.raises(WSOLInputError, match="exists with --direction maximize"):
        create_or_load_study(open_storage(url), "s", "minimize")


def test_budget_counts_retried_failures_once(tmp_path):
    study, _ = create_or_load_study(open_storage(f"sqlite:///{tmp_path}/s.db"), "b", "maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=1.0, params={"x": .1}, distributions=dist))
    study.add_trial(optuna.create_trial(state=TrialState.PRUNED, params={"x": .2}, distributions=dist,
                                        intermediate_values={0: 0.5}))
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"x": .3}, distributions=dist))  # number 2
    # The heartbeat retry of trial 2: its FAIL no longer counts, the copy does.
    RetryHeartbeatStaleTrialCallback()(study, study.trials[2])
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"x": .4}, distributions=dist))  # not retried
    state = budget(study)
    assert (state.counted, state.done, state.waiting, state.running) == (4, 3, 1, 0)
    assert not is_over_budget(study, 5, 5) and is_over_budget(study, 5, 4)
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"x": .5}, distributions=dist,
                                        system_attrs={OVER_BUDGET_KEY: True}))
    assert budget(study).counted == 4


def test_enqueue_once_is_rerun_safe():
    study = optuna.create_study()
    assert enqueue_once(study, {"bg_grid_size": 0.4})
    assert not enqueue_once(study, {"bg_grid_size": 0.4})
    assert len(study.trials) == 1


def test_worker_seeds():
    assert worker_seed(0, study_created=True, existing_trials=0) == 0
    joining = worker_seed(0, study_created=False, existing_trials=0)
    assert joining != 0 and worker_seed(None, False, 3) is None


def test_samplers_and_pruners():
    space = default_search_space()
    assert isinstance(make_sampler("tpe", 0, space), optuna.samplers.TPESampler)
    assert isinstance(make_sampler("random", 0, space), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler("grid", 0, space, grid_points=3), optuna.samplers.GridSampler)
    median = make_pruner("median", 3, 2, 1)
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert (median._n_startup_trials, median._n_warmup_steps) == (3, 2)
    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)
    for name in ("percentile", "successive_halving", "hyperband"):
        assert isinstance(make_pruner(name), optuna.pruners.BasePruner)
    with pytest.raises(WSOLInputError, match="--n-warmup-steps=-1"):
        make_pruner("median", 1, -1, 1)


def test_handoff_only_for_relaunched_ranks(monkeypatch):
    payload = ddp.make_handoff("sqlite:///x.db", "s", 7, ["--model.lr=0.1"], test=False)
    monkeypatch.setenv(ddp.HANDOFF_ENV, json.dumps(payload))
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert ddp.handoff_from_env() is None  # rank 0 is the worker itself
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert ddp.handoff_from_env() == payload
    monkeypatch.delenv(ddp.HANDOFF_ENV)
    assert ddp.handoff_from_env() is None  # a plain fit.py/ddp rank, not a trial


def test_validation_more_than_once_per_epoch_is_refused():
    from lightning.pytorch import Trainer

    from wsol_lightning.tuning.checks import check_trainer

    check_trainer(Trainer(logger=False, enable_checkpointing=False), storage_is_rdb=False)
    with pytest.raises(WSOLInputError, match="val_check_interval=0.5.*once per epoch"):
        check_trainer(Trainer(val_check_interval=0.5, logger=False, enable_checkpointing=False), True)
    ddp_trainer = Trainer(strategy="ddp_spawn", devices=2, accelerator="cpu", logger=False,
                          enable_checkpointing=False)
    with pytest.raises(WSOLInputError, match="need an RDB --storage"):
        check_trainer(ddp_trainer, storage_is_rdb=False)
    assert ddp.strategy_name(ddp_trainer) == "ddp_spawn"
    assert ddp.strategy_name(Trainer(strategy="ddp", devices=2, accelerator="cpu", logger=False)) == "ddp"


def test_enqueue_once_recognizes_a_partial_enqueue_that_already_ran():
    study = optuna.create_study()
    assert enqueue_once(study, {"x": 0.0})
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1), n_trials=1)
    assert study.trials[0].params["x"] == 0.0
    assert not enqueue_once(study, {"x": 0.0})  # a rerun of the same command does not run it again
    assert len(study.trials) == 1


def test_tune_defaults_are_the_benchmarked_trials_and_pruner(tmp_path):
    """benchmarks/bench_pruning.py measured these (README, "Measured"): 8 epochs of 5 batches, cosine lr,
    MedianPruner after 5 trials from the second epoch."""
    from wsol_lightning.cli import build_run
    from wsol_lightning.tuning.options import TUNE_DEFAULT_ARGS, build_parser

    options, _ = build_parser().parse_known_args([])
    assert (options.pruner, options.n_startup_trials, options.n_warmup_steps) == ("median", 5, 1)
    run = build_run([*TUNE_DEFAULT_ARGS, "--data.data_root", str(tmp_path / "data"), "--run_dir", str(tmp_path / "r")])
    assert (run.trainer.max_epochs, run.trainer.limit_train_batches, run.trainer.limit_val_batches) == (8, 5, 4)
    assert run.model.hparams.lr_schedule == "cosine"
