"""Stage `report`: RUN/report.md and RUN/figures/*.png from an experiment directory (see pipeline.report)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import UserError
from pipeline.report import ReportFiles, build_report


@dataclass
class ReportConfig:
    """What to report on."""

    run_dir: str
    """The experiment directory (holds experiment.json, teacher/, students/, teacher-logits/)."""
    baseline: str | None = None
    """Name of the run under students/ to compare against; default: the run whose kind is "baseline"."""

    def __post_init__(self) -> None:
        if not str(self.run_dir).strip():
            raise UserError("RUN must name an experiment directory")
        if self.baseline is not None and not self.baseline.strip():
            raise UserError("--baseline must name a run under RUN/students/")


def run(config: ReportConfig) -> ReportFiles:
    return build_report(config.run_dir, config.baseline)
