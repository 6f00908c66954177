"""tune.py's Optuna side without training: storages, study creation, budget, seeds, samplers and pruners, refusals.

The DDP handoff is tested by tests/integration/test_tune_ddp.py.
"""

import re

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from tests.one_line import one_line_error
from wsol_lightning.errors import WSOLInputError
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
    assert type(make_sampler("tpe", 0, space)) is optuna.samplers.TPESampler
    assert type(make_sampler("random", 0, space)) is optuna.samplers.RandomSampler
    assert type(make_sampler("grid", 0, space, grid_points=3)) is optuna.samplers.GridSampler
    assert type(make_pruner("none")) is optuna.pruners.NopPruner
    assert type(make_pruner("successive_halving")) is optuna.pruners.SuccessiveHalvingPruner
    assert type(make_pruner("hyperband")) is optuna.pruners.HyperbandPruner
    with pytest.raises(WSOLInputError, match="--n-warmup-steps=-1"):
        make_pruner("median", 1, -1, 1)


def pruned(pruner, history, value, step, earlier=()):
    """Whether ``pruner`` stops a running trial reporting ``value`` at ``step`` (after ``earlier`` at steps
    0, 1, ...), after completed trials whose curves are ``history`` (maximize)."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for curve in history:
        study.add_trial(optuna.create_trial(params={"x": 0.5}, distributions=dist, value=curve[-1],
                                            intermediate_values=dict(enumerate(curve))))
    trial = study.ask()
    for earlier_step, earlier_value in enumerate(earlier):
        trial.report(earlier_value, earlier_step)
    trial.report(value, step)
    return trial.should_prune()


def test_median_and_percentile_pruners_decide_with_their_flags():
    history = [[10, 20, 30], [20, 40, 60], [30, 60, 90], [40, 80, 120]]  # at step 1: 20, 40, 60, 80
    median = make_pruner("median", n_startup_trials=4, n_warmup_steps=1, interval_steps=1)
    assert pruned(median, history, 45, step=1) and not pruned(median, history, 55, step=1)  # median 50
    assert not pruned(median, history, 0, step=0)  # warm-up: never at epoch 0
    assert not pruned(make_pruner("median", 5, 1, 1), history, 0, step=1)  # 4 < --n-startup-trials 5
    percentile = make_pruner("percentile", 4, 1, 1, percentile=25.0)  # keep the top 25%: below 65 is pruned
    assert pruned(percentile, history, 64, step=1) and not pruned(percentile, history, 66, step=1)
    assert not pruned(make_pruner("percentile", 4, 1, 1, percentile=75.0), history, 36, step=1)  # 75%: above 35


def test_patience_wraps_the_pruner_and_spares_a_trial_still_rising():
    history = [[10, 20, 30], [20, 40, 60], [30, 60, 90], [40, 80, 120]]  # median at step 1: 50
    patient = make_pruner("median", 4, 0, 1, patience=0)
    assert isinstance(patient, optuna.pruners.PatientPruner)
    assert type(make_pruner("none", patience=0)) is optuna.pruners.NopPruner

    assert not pruned(patient, history, 30, step=1, earlier=[5])  # far below the median (50), but rising: kept
    assert pruned(patient, history, 30, step=1, earlier=[35])  # below the median and fell: pruned
    assert not pruned(patient, history, 60, step=1, earlier=[70])  # fell, but above the median: kept
    with pytest.raises(WSOLInputError, match="--patience=-1"):
        make_pruner("median", patience=-1)


# What a worker does by hand here (record a heartbeat, fail stale trials) Study.optimize would do; optuna warns.
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
@pytest.mark.filterwarnings("ignore:.*fail_stale_trials is experimental")
def test_max_retry_bounds_the_retries_of_a_dead_worker_s_trial(tmp_path):
    import time

    from optuna.storages import fail_stale_trials

    studies = {}
    for max_retry in (0, 1):
        storage = open_storage(f"sqlite:///{tmp_path}/r{max_retry}.db", heartbeat_interval=1, grace_period=1,
                               max_retry=max_retry)
        studies[max_retry] = create_or_load_study(storage, "r", "maximize")[0]
    for _ in range(2):  # a trial whose worker dies (no heartbeat after the first), twice
        for study in studies.values():
            trial = study.ask()
            trial.suggest_float("x", 0, 1)
            study._storage.record_heartbeat(trial._trial_id)
        time.sleep(2.1)  # the storage keeps heartbeats to the second
        for study in studies.values():
            fail_stale_trials(study)
    # --max-retry 0: the dead worker's trial is not run again; 1: once (its retry dies too: no third copy).
    for max_retry, retried_from in ((0, [None, None]), (1, [None, 0])):
        trials = studies[max_retry].trials
        assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL], max_retry
        assert [t.system_attrs.get("failed_trial") for t in trials] == retried_from


def test_a_grid_caps_the_budget_at_its_size(tmp_path):
    from wsol_lightning.tuning.options import parse_args
    from wsol_lightning.tuning.plan import make_plan

    plan = make_plan(*parse_args(["--sampler", "grid", "--grid-points", "2", "--n-trials", "10",
                                  "--study-dir", str(tmp_path)]))
    assert plan.n_trials == 4 and plan.notes == ["grid of 4 points: --n-trials 10 lowered to 4"]
    assert make_plan(*parse_args(["--sampler", "grid", "--grid-points", "3", "--n-trials", "5"])).n_trials == 5


def test_help_shows_every_default_but_none_and_flags():
    from wsol_lightning.tuning.options import build_parser

    entries, current = {}, None  # each option's help, from its own "  --flag ..." line to the next option's
    for line in build_parser().format_help().split("options:", 1)[1].splitlines():
        if re.match(r"  -", line):
            current = line.split()[0].rstrip(",")
            entries[current] = ""
        if current:
            entries[current] += " " + line.strip()
    for flag, default in (("--n-warmup-steps", "1"), ("--interval-steps", "1"), ("--workers", "1"),
                          ("--n-startup-trials", "3"), ("--n-trials", "20")):  # 1 == True must not hide a 1
        assert entries[flag].endswith(f"(default: {default})"), (flag, entries[flag])
    assert not any(text.endswith(("(default: None)", "(default: True)")) for text in entries.values())
