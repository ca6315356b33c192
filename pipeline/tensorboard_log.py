"""A TensorBoard mirror of a run's metrics (`train.logger = "tensorboard"`): the convention ML engineers
expect to watch. metrics.jsonl and steps.jsonl stay the source of truth; this only copies their numbers
into event files under RUN/tensorboard/, with the tokens seen as the x axis (so runs of different batch
sizes line up). Needs the `tensorboard` package (superstill's `tensorboard` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import UserError

LOGGERS = ("jsonl", "tensorboard")
"""jsonl: metrics.jsonl and steps.jsonl only; tensorboard: those plus TensorBoard event files."""
DIRECTORY = "tensorboard"
# Per event kind, the fields drawn and the tag each gets.
_TAGS = {"eval": {"val_ppl": "perplexity/held_out", "train_ppl": "perplexity/train_subset",
                  "w_teacher": "schedule/w_teacher"},
         "epoch": {"loss": "loss/epoch_mean", "loss_teacher": "loss/teacher_epoch_mean",
                   "loss_data": "loss/data_epoch_mean", "tokens_per_s": "speed/tokens_per_s"},
         "step": {"loss": "loss/step", "loss_teacher": "loss/teacher", "loss_data": "loss/data", "lr": "lr"},
         "schedule": {"w_teacher": "schedule/w_teacher", "w_data": "schedule/w_data"}}


class TensorBoardMirror:
    """Writes the numeric fields of metric records as TensorBoard scalars."""

    def __init__(self, run_dir: Path):
        self.writer = self.summary_writer_class()(log_dir=str(run_dir / DIRECTORY))

    @staticmethod
    def summary_writer_class():
        """torch's SummaryWriter; a one-line error when tensorboard is not installed (check before any work)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("train.logger tensorboard needs the tensorboard package; install superstill's "
                            "extra (pip install -e '.[tensorboard]') or use train.logger=jsonl") from None
        return SummaryWriter

    def write(self, kind: str, record: dict[str, Any], tokens_seen: int) -> None:
        for field, tag in _TAGS.get(kind, {}).items():
            value = record.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag, value, global_step=tokens_seen)

    def close(self) -> None:
        self.writer.close()
