"""benchmarks/replay_pruners.py: a no-pruner study's curves replayed under tune.py's pruners."""

import optuna
import pytest

from benchmarks.replay_pruners import load_curves, main, replay
from wsol_lightning.tuning.study import make_pruner

#: Four trials' val/localization per epoch, in trial order: a slow starter that ends best comes last.
CURVES = [[40.0, 50.0, 55.0], [45.0, 52.0, 58.0], [30.0, 48.0, 60.0], [20.0, 35.0, 65.0]]


@pytest.mark.parametrize(("warmup", "epochs", "best"), [
    (0, 3 + 3 + 1 + 1, 58.0),  # median of the first two at epoch 0 is 42.5: trials 3 and 4 stop at once
    (1, 3 + 3 + 2 + 2, 58.0),  # judged from epoch 1 (median 51): trials 3 (48) and 4 (35) stop there
    (2, 3 + 3 + 3 + 3, 65.0),  # only the last epoch is judged: nothing is below the median there
])
def test_replay_counts_the_epochs_each_setting_trains(warmup, epochs, best):
    assert replay(CURVES, make_pruner("median", 2, warmup, 1), "maximize") == (epochs, best)


def test_the_table_compares_each_setting_with_the_study_itself(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/none.db"
    study = optuna.create_study(study_name="bench-none-seed0", storage=storage, direction="maximize")
    for curve in CURVES:
        trial = study.ask()
        for step, value in enumerate(curve):
            trial.report(value, step)
        study.tell(trial, curve[-1])
    assert load_curves(str(tmp_path / "none.db"), None) == ("bench-none-seed0", CURVES, "maximize")
    main([storage, "--startup", "2", "--warmup", "0", "2"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| median")]
    assert rows == ["| median | 2 | 0 | off | 33% | 33% | -7.00 |", "| median | 2 | 2 | off | 0% | 0% | +0.00 |"]
    main([storage, "--startup", "2", "--warmup", "0", "--patience", "off", "0"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| median")]
    assert rows == ["| median | 2 | 0 | off | 33% | 33% | -7.00 |", "| median | 2 | 0 | 0 | 0% | 0% | +0.00 |"]


def test_patience_keeps_rising_trials_however_far_they_trail():
    """Every curve of CURVES rises at every epoch: with patience, the median never gets to judge them."""
    assert replay(CURVES, make_pruner("median", 2, 0, 1, patience=0), "maximize") == (12, 65.0)
    falling = [*CURVES[:2], [30.0, 25.0, 60.0], [20.0, 35.0, 34.0]]  # trial 3 falls at epoch 1, trial 4 at 2
    # trial 3 falls at epoch 1 below the median (51): stopped there; trial 4 rises at epoch 1 (kept though
    # below the median), falls at epoch 2 below the median (56.5 of 55, 58): stopped after 3 epochs
    assert replay(falling, make_pruner("median", 2, 0, 1, patience=0), "maximize") == (3 + 3 + 2 + 3, 58.0)
