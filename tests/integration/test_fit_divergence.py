"""fit.py when training diverges: one line naming where and what to change, exit status 2, epoch 0 kept.

fit.py's ``main`` runs in this process (a subprocess would spend most of its time importing torch)
with the plain CAM loss turned NaN from the 4th training step on, as a far too high learning rate
would do: epoch 1, step 3, with 2 steps per epoch.
"""

import pytest
import torch

from wsol_lightning.fit import main
from wsol_lightning.models.methods.registry import get_method


@pytest.mark.slow
def test_nan_loss_stops_fit_with_one_line_and_exit_status_2(tmp_path, monkeypatch, capsys):
    method = get_method("base")
    plain_loss, calls = method.loss, []

    def diverging_loss(self, outputs, batch):
        calls.append(1)
        return plain_loss(self, outputs, batch) * (float("nan") if len(calls) >= 4 else 1.0)

    monkeypatch.setattr(method, "loss", diverging_loss)
    with pytest.raises(SystemExit) as exit_info:
        main(["--model.wsol_method", "base", "--model.lr", "0.02", "--data.data_root", str(tmp_path / "data"),
              "--data.synthetic_num_train", "32", "--data.synthetic_num_val", "4", "--data.synthetic_num_test", "4",
              "--data.batch_size", "16", "--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false",
              "--trainer.enable_model_summary", "false", "--run_dir", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert err.strip().splitlines()[-1] == ("error: training loss is nan at epoch 1, step 3 (diverged): "
                                            "lower --model.lr (now 0.02)")
    assert "Traceback" not in err and "finished in" not in out
    last = torch.load(tmp_path / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt",
                      map_location="cpu", weights_only=False)
    assert last["epoch"] == 0  # the epoch trained before the divergence is kept
