"""`pipeline train-student`: a student trained from token ids plus the stored teacher distribution.

Without a teacher it trains the same-size baseline with plain cross-entropy, through the same loop and
the same data order, so the comparison is fair. With `teacher_checkpoint` it runs the teacher online.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.checkpoint import file_sha256, load_model
from pipeline.distillation import DistillationSpec
from pipeline.dump_spec import check_sampled_temperature
from pipeline.distributed import DistContext, resolve_device
from pipeline.errors import UserError
from pipeline.evaluation import perplexity
from pipeline.logit_store import LogitStore
from pipeline.run_identity import store_fingerprint
from pipeline.objectives import DataObjective, SuperstillObjective
from pipeline.progress import log
from pipeline.run_settings import TrainingStageConfig
from pipeline.token_store import TokenStore
from pipeline.training import TrainingRun, train

RENORM_WARN_MASS = 0.5  # below this mean top-k mass, renormalizing moves most of the teacher's mass


@dataclass
class TrainStudentConfig(TrainingStageConfig):
    preset: str = "paper-small-student"
    teacher_logits: str | None = None
    """Logit store (from dump-teacher); None and no teacher_checkpoint = the baseline."""
    teacher_checkpoint: str | None = None
    """Online mode: run this teacher every step instead of reading a store."""
    online_top_k: int = 0
    """Online mode: keep only the teacher's top-k (0 = the full distribution)."""
    distillation: DistillationSpec = field(default_factory=DistillationSpec)
    """Temperature, weights, tail handling and transition epoch of the teacher term."""

    def __post_init__(self) -> None:
        if self.teacher_logits and self.teacher_checkpoint:
            raise UserError("--teacher-logits and --teacher-checkpoint are alternatives; pass one")
        if self.online_top_k < 0:
            raise UserError(f"--online-top-k must be >= 0 (0 = the full distribution), got {self.online_top_k}")

    @property
    def is_baseline(self) -> bool:
        return not (self.teacher_logits or self.teacher_checkpoint)

    def inputs(self) -> dict[str, str]:
        return {**super().inputs(), "--teacher-logits": self.teacher_logits,
                "--teacher-checkpoint": self.teacher_checkpoint}


def _recorded_teacher_nll(store: LogitStore, spec: DistillationSpec, location: str) -> float | None:
    """The teacher's held-out cross-entropy recorded at dump time; the auto schedule cannot run without it."""
    value = store.meta.stats.get("teacher_eval", {}).get("val_nll")
    if spec.schedule == "auto" and value is None:
        raise UserError(f"--schedule auto needs the teacher's held-out cross-entropy, which {location} does not "
                        f"record (dumped by an older superstill, or without a val split); dump it again or use "
                        f"--schedule linear")
    return value


def _store_objective(config: TrainStudentConfig, tokens: TokenStore):
    store = LogitStore.open(config.teacher_logits)
    store.check_matches(tokens, "train")
    spec = config.distillation
    if store.meta.rows == "sampled":  # sampled targets exist only at their sampling temperature
        check_sampled_temperature(store.meta.temperatures[0], spec.temperature, "--temperature")
    if store.meta.k and spec.temperature not in [float(t) for t in store.meta.temperatures]:
        log(f"warning: --temperature {spec.temperature:g} is not stored exactly in {config.teacher_logits} "
            f"(listed: {list(store.meta.temperatures)}); its normalizer and tail are approximated (docs/STORE.md)")
    if spec.tail == "renorm":
        mass = store.meta.stats.get("topk_mass", {}).get("train", {}).get(f"{spec.temperature:g}", {}).get("mean")
        if mass is not None and mass < RENORM_WARN_MASS:
            log(f"warning: --tail renorm at T={spec.temperature:g}: the top-{store.meta.k} holds only {mass:.0%} of "
                f"the teacher's mass on average; renormalizing moves the rest onto those ids (this diverged in our "
                f"measurements); --tail bucket keeps it")
    objective = SuperstillObjective(spec, source=str(config.teacher_logits),
                                    teacher_nll=_recorded_teacher_nll(store, spec, config.teacher_logits))
    return objective, (lambda lo, hi: store.read_rows("train", lo, hi)), store_fingerprint(store.meta)


def _online_objective(config: TrainStudentConfig, tokens: TokenStore, model_config, train_config):
    """The teacher run every step; for an auto schedule its held-out cross-entropy is measured first."""
    teacher, _ = load_model(config.teacher_checkpoint, "--teacher-checkpoint")
    if teacher.spec.vocab_size != tokens.vocab_size:
        raise UserError(f"--teacher-checkpoint predicts {teacher.spec.vocab_size} ids, the token store has "
                        f"{tokens.vocab_size}; use the teacher's token store")
    if teacher.spec.context < model_config.context:
        raise UserError(f"--teacher-checkpoint has context {teacher.spec.context}, shorter than the student's "
                        f"{model_config.context}; online mode runs the teacher on the student's windows")
    teacher_nll = None
    if config.distillation.schedule == "auto":
        device = resolve_device(train_config.device, DistContext())
        teacher_nll = perplexity(teacher.to(device), tokens.read("val"), teacher.spec.context,
                                 train_config.eval_batch_size, device, split="val").nll
    return SuperstillObjective(config.distillation, teacher_model=teacher, online_top_k=config.online_top_k or None,
                               source=str(config.teacher_checkpoint), teacher_nll=teacher_nll)


def run(config: TrainStudentConfig) -> dict[str, Any]:
    tokens, model_config, train_config = config.open()
    row_source, teacher_identity = None, None
    if config.is_baseline:
        objective, kind = DataObjective(), "baseline"
    elif config.teacher_logits:
        (objective, row_source, teacher_identity), kind = _store_objective(config, tokens), "student"
    else:
        objective, kind = _online_objective(config, tokens, model_config, train_config), "student"
        teacher_identity = f"checkpoint sha256 {file_sha256(config.teacher_checkpoint)}"
    return train(TrainingRun(out=Path(config.out), kind=kind, model_config=model_config, train_config=train_config,
                             tokens=tokens, objective=objective, row_source=row_source, resume=config.resume,
                             force=config.force, inputs=config.inputs(), teacher_identity=teacher_identity,
                             extra={"preset": config.preset}))
