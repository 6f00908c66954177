"""What tune.py prints and draws, on a hand-made study (no training)."""

import optuna
from optuna.trial import TrialState

from wsol_lightning.tuning import report
from wsol_lightning.tuning.study import OVER_BUDGET_KEY


def make_study():
    study = optuna.create_study(direction="maximize")
    dists = {"bg_grid_size": optuna.distributions.FloatDistribution(0, 1),
             "lr": optuna.distributions.FloatDistribution(1e-3, 1, log=True)}
    for i, (grid, lr, value) in enumerate([(0.1, 0.01, 40.0), (0.5, 0.02, 55.0), (0.9, 0.1, 30.0), (0.3, 0.05, 48.0)]):
        study.add_trial(optuna.create_trial(params={"bg_grid_size": grid, "lr": lr}, distributions=dists, value=value,
                                            intermediate_values={0: value - 10, 1: value},
                                            user_attrs={"epochs": 2, "val/MaxBoxAccV2": value, "val/top1": 70.0}))
    study.add_trial(optuna.create_trial(state=TrialState.PRUNED, params={"bg_grid_size": 0.7, "lr": 0.5},
                                        distributions=dists, intermediate_values={0: 5.0, 1: 6.0},
                                        user_attrs={"epochs": 2, "pruned_epoch": 1,
                                                    "reason": "Trial was pruned at epoch 1."}))
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"bg_grid_size": 0.2, "lr": 0.5},
                                        distributions=dists, system_attrs={OVER_BUDGET_KEY: True}))
    return study


def test_lines_summary_and_table():
    study = make_study()
    line = report.trial_line(study.trials[4])
    assert line.startswith("trial   4  PRUNED") and "epochs 2" in line and "bg_grid_size=0.7" in line
    assert "pruned at epoch 1" in line
    assert "value  55.00" in report.trial_line(study.trials[1])
    summary = report.classic_summary(study)
    assert summary[0] == "Number of finished trials: 5"  # the over-budget trial is not shown
    assert "Best trial:" in summary and "  Value: 55.0" in summary and "    bg_grid_size: 0.5" in summary
    table = report.summary_table(study)
    assert table[0].split()[:4] == ["trial", "state", "value", "epochs"]
    assert table[1].split()[:3] == ["1", "COMPLETE", "55.00"] and len(table) == 6
    assert report.epochs_trained(study) == 10


def test_plots_png_and_html(tmp_path):
    paths = report.save_plots(make_study(), tmp_path)
    assert set(paths) == {"optimization_history", "intermediate_values", "param_importances", "slice_bg_grid_size"}
    for name, path in paths.items():
        assert path.endswith(".png"), (name, path)
        assert (tmp_path / f"{name}.png").stat().st_size > 5000 and (tmp_path / f"{name}.html").is_file()


def test_plots_of_an_empty_study_are_skipped(tmp_path):
    paths = report.save_plots(optuna.create_study(), tmp_path)
    assert all(path.startswith("skipped") for name, path in paths.items() if name != "intermediate_values")
