"""Under DDP the metrics equal a single process's on the same data: each image counted once, states summed.

Two CPU processes (``ddp_spawn``, gloo) validate an untrained network on 5 images in batches of 2, an
uneven split. Lightning's default distributed sampler would pad it to 6 by repeating an image, which
every metric would then count twice; the data module gives evaluation loaders a sampler that does not
repeat (ranks may run one batch fewer). Each rank writes what it scored and what it logged itself.
"""

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from wsol_lightning.data.datamodule import WSOLDataModule
from wsol_lightning.module import WSOLModule

pytestmark = pytest.mark.slow  # two spawned processes importing torch and Lightning
DATA = dict(synthetic_num_train=8, synthetic_num_val=5, synthetic_num_test=4, batch_size=2, num_workers=0)
QUIET = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
             enable_model_summary=False)


class RankRecord(Callback):
    """Each rank writes ``rank<k>.json``: the image ids it scored and the metrics it logged."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.image_ids = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):  # noqa: D102
        self.image_ids.extend(batch["image_id"])

    def on_validation_end(self, trainer, pl_module):  # noqa: D102
        record = {"image_ids": self.image_ids, "world_size": trainer.world_size,
                  "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}}
        Path(self.folder, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _untrained() -> WSOLModule:
    torch.manual_seed(0)  # the same weights for both runs
    return WSOLModule(num_classes=5, wsol_method="base")


def test_two_rank_validation_equals_one_process(tmp_path):
    datamodule = WSOLDataModule(data_root=str(tmp_path / "data"), **DATA)
    datamodule.prepare_data()  # generated once, before the processes start
    single = Trainer(devices=1, **QUIET).validate(_untrained(), datamodule=datamodule, verbose=False)[0]
    assert set(single) == {f"val/{name}" for name in ("top1", "MaxBoxAcc", "MaxBoxAccV2", "MaxBoxAccV2_IoU30",
                                                      "MaxBoxAccV2_IoU50", "MaxBoxAccV2_IoU70", "top1_loc", "PxAP",
                                                      "localization")}

    folder = tmp_path / "ranks"
    folder.mkdir()
    trainer = Trainer(devices=2, strategy="ddp_spawn", callbacks=[RankRecord(str(folder))], **QUIET)
    returned = trainer.validate(_untrained(), datamodule=WSOLDataModule(data_root=str(tmp_path / "data"), **DATA), verbose=False)
    ranks = [json.loads((folder / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    scored = ranks[0]["image_ids"] + ranks[1]["image_ids"]
    assert sorted(scored) == [f"val/{i:05d}.png" for i in range(5)]  # every image once, none repeated
    for record in ranks:  # what each rank logged itself: the figures of the whole split
        assert record["metrics"] == pytest.approx(single, abs=1e-6), record
    assert returned[0] == pytest.approx(single, abs=1e-6)
