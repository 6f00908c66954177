"""A trial in-process on tiny data: per-epoch reports, pruning, divergence, failures, memory across trials."""

import optuna
import pytest
from optuna.trial import TrialState

from wsol_lightning.module import NonFiniteLossError, WSOLModule
from wsol_lightning.tuning.objective import Objective
from wsol_lightning.tuning.space import default_search_space

pytestmark = pytest.mark.slow


def objective(tmp_path, *extra):
    base = ["--data.synthetic_num_train", "32", "--data.synthetic_num_val", "16", "--data.synthetic_num_test", "16",
            "--data.batch_size", "16", "--data.data_root", str(tmp_path / "data"), "--trainer.max_epochs", "3",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *extra]
    return Objective(base, default_search_space(), tmp_path / "study", n_trials=10)


def test_reports_every_epoch_and_pruner_stops_the_trial(tmp_path):
    # ThresholdPruner(lower=101): no localization score reaches it, so the first report after warm-up prunes.
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=101,
                                                                                           n_warmup_steps=1))
    study.enqueue_trial({"bg_grid_size": 0.25, "lr": 0.02})
    study.optimize(objective(tmp_path), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [0, 1]  # epoch 0 (warm-up) and epoch 1, where it was pruned
    assert trial.user_attrs["pruned_epoch"] == 1 and trial.user_attrs["epochs"] == 2
    assert "pruned at epoch 1" in trial.user_attrs["reason"]
    assert "val/localization" in trial.user_attrs and trial.user_attrs["checkpoint"].endswith("last.ckpt")

    nop = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    nop.optimize(objective(tmp_path), n_trials=1)
    done = nop.trials[0]
    assert done.state == TrialState.COMPLETE and sorted(done.intermediate_values) == [0, 1, 2]
    assert done.value == pytest.approx(done.intermediate_values[2], abs=1e-4)  # the final epoch's value
    # Without --test / --figure (tune.py's default): no test split, no figure.
    assert not any(key.startswith("test/") for key in done.user_attrs)
    assert not list((tmp_path / "study").glob("trial-*/cam_grid.png"))


def test_divergence_prunes_and_other_errors_fail_while_the_study_goes_on(tmp_path, monkeypatch):
    original = WSOLModule.training_step

    def diverging(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise NonFiniteLossError("training loss is nan at epoch 1, step 2 (diverged): lower --model.lr")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(WSOLModule, "training_step", diverging)
    study = optuna.create_study(direction="maximize")
    study.optimize(objective(tmp_path), n_trials=1, catch=(Exception,))
    diverged = study.trials[0]
    assert diverged.state == TrialState.PRUNED
    assert diverged.user_attrs["reason"].startswith("diverged: NonFiniteLossError: training loss is nan")
    assert diverged.user_attrs["epochs"] == 1 and sorted(diverged.intermediate_values) == [0]
    monkeypatch.setattr(WSOLModule, "training_step", original)

    def out_of_memory(self, batch, batch_idx):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(WSOLModule, "training_step", out_of_memory)
    study.optimize(objective(tmp_path), n_trials=1, catch=(Exception,))
    monkeypatch.setattr(WSOLModule, "training_step", original)
    study.optimize(objective(tmp_path), n_trials=1, catch=(Exception,))
    failed, after = study.trials[1], study.trials[2]
    assert failed.state == TrialState.FAIL and "CUDA out of memory" in failed.user_attrs["error"]
    assert after.state == TrialState.COMPLETE


def test_memory_does_not_grow_across_trials(tmp_path):
    import gc

    import torch

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial_objective = objective(tmp_path, "--trainer.max_epochs", "1")
    study.optimize(trial_objective, n_trials=1)
    gc.collect()
    baseline = sum(1 for o in gc.get_objects() if isinstance(o, torch.nn.Module))
    study.optimize(trial_objective, n_trials=3)
    gc.collect()
    assert sum(1 for o in gc.get_objects() if isinstance(o, torch.nn.Module)) <= baseline


def test_an_interrupt_fails_the_trial_at_the_next_batch_and_queues_it_again(tmp_path, monkeypatch):
    import signal

    from lightning.pytorch import Callback

    from wsol_lightning import cli
    from wsol_lightning.tuning import interrupts

    class SignalAtEpoch1(Callback):  # stands in for a Ctrl-C that lands as epoch 1 starts
        batches_after = 0

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                interrupts.request(signal.SIGINT)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            SignalAtEpoch1.batches_after += interrupts.requested() is not None

    build_run = cli.build_run
    monkeypatch.setattr(cli, "build_run", lambda args, callbacks=(): build_run(args, [*callbacks, SignalAtEpoch1()]))
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    with interrupts.handled():
        study.optimize(objective(tmp_path), n_trials=1, catch=(Exception,), callbacks=[interrupts.requeue_interrupted])
        assert interrupts.exit_status() == 130
    trial, copy = study.trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["reason"] == "interrupted"
    assert sorted(trial.intermediate_values) == [0] and trial.user_attrs["epochs"] == 1  # stopped in epoch 1
    assert SignalAtEpoch1.batches_after == 0  # at its first batch
    assert copy.state == TrialState.WAITING and copy.params == trial.params


def test_test_and_figure_flags_record_the_test_split_and_draw_the_figure(tmp_path):
    trial_objective = objective(tmp_path, "--trainer.max_epochs", "1")
    trial_objective.test, trial_objective.figure = True, True
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    study.optimize(trial_objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE
    assert {"test/localization", "test/top1", "test/MaxBoxAccV2"} <= set(trial.user_attrs), trial.user_attrs
    assert (tmp_path / "study" / "trial-0000" / "cam_grid.png").stat().st_size > 0
