"""`pipeline train-student`: a student trained from token ids plus the stored teacher distribution.

Without a teacher it trains the same-size baseline with plain cross-entropy, through the same loop and
the same data order, so the comparison is fair. With `teacher_checkpoint` it runs the teacher online.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.checkpoint import load_model
from pipeline.errors import UserError
from pipeline.logit_store import LogitStore
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
    temperature: float = 6.0
    """T of the teacher term (the paper: 6; any T works, exactly for T listed in the store)."""
    w_teacher: float = 0.6
    """w1, weight of T^2 * l_t (the paper: 0.6)."""
    w_data: float = 0.4
    """w2, weight of l_d (the paper: 0.4)."""
    tail: str = "bucket"
    """"bucket" (teacher's tail mass as one extra outcome) or "renorm" (top-k renormalized)."""
    transition_epoch: int | str = "all"
    """Superstill through this epoch, then plain l_d; "all" never switches."""

    def __post_init__(self) -> None:
        if self.teacher_logits and self.teacher_checkpoint:
            raise UserError("--teacher-logits and --teacher-checkpoint are alternatives; pass one")
        if self.temperature <= 0:
            raise UserError(f"--temperature must be positive, got {self.temperature}")
        if self.tail not in ("bucket", "renorm"):
            raise UserError(f"--tail must be bucket or renorm, got {self.tail!r}")
        if self.w_teacher < 0 or self.w_data < 0:
            raise UserError("--w-teacher and --w-data must be non-negative")
        if self.transition_epoch != "all":
            try:
                self.transition_epoch = int(self.transition_epoch)
            except ValueError:
                raise UserError(f"--transition-epoch must be an epoch number or 'all', got {self.transition_epoch!r}") from None
            if self.transition_epoch < 0:
                raise UserError("--transition-epoch must be >= 0")

    @property
    def is_baseline(self) -> bool:
        return not (self.teacher_logits or self.teacher_checkpoint)


def _store_objective(config: TrainStudentConfig, tokens: TokenStore):
    store = LogitStore.open(config.teacher_logits)
    store.check_matches(tokens, "train")
    if store.meta.k and config.temperature not in [float(t) for t in store.meta.temperatures]:
        log(f"warning: --temperature {config.temperature:g} is not stored exactly in {config.teacher_logits} "
            f"(listed: {list(store.meta.temperatures)}); its normalizer and tail are approximated (docs/STORE.md)")
    if config.tail == "renorm":
        mass = store.meta.stats.get("topk_mass", {}).get("train", {}).get(f"{config.temperature:g}", {}).get("mean")
        if mass is not None and mass < RENORM_WARN_MASS:
            log(f"warning: --tail renorm at T={config.temperature:g}: the top-{store.meta.k} holds only {mass:.0%} of "
                f"the teacher's mass on average; renormalizing moves the rest onto those ids (this diverged in our "
                f"measurements); --tail bucket keeps it")
    objective = SuperstillObjective(config.temperature, config.w_teacher, config.w_data, config.tail,
                                    config.transition_epoch, source=str(config.teacher_logits))
    return objective, (lambda lo, hi: store.read_rows("train", lo, hi))


def run(config: TrainStudentConfig) -> dict[str, Any]:
    tokens, model_config, train_config = config.open()
    row_source = None
    if config.is_baseline:
        objective, kind = DataObjective(), "baseline"
    elif config.teacher_logits:
        (objective, row_source), kind = _store_objective(config, tokens), "student"
    else:
        teacher, _ = load_model(config.teacher_checkpoint, "--teacher-checkpoint")
        if teacher.config.vocab_size != tokens.vocab_size:
            raise UserError(f"--teacher-checkpoint predicts {teacher.config.vocab_size} ids, the token store has "
                            f"{tokens.vocab_size}; use the teacher's token store")
        if teacher.config.context < model_config.context:
            raise UserError(f"--teacher-checkpoint has context {teacher.config.context}, shorter than the student's "
                            f"{model_config.context}; online mode runs the teacher on the student's windows")
        objective, kind = SuperstillObjective(config.temperature, config.w_teacher, config.w_data, config.tail,
                                              config.transition_epoch, teacher_model=teacher,
                                              online_top_k=config.online_top_k or None,
                                              source=str(config.teacher_checkpoint)), "student"
    return train(TrainingRun(out=Path(config.out), kind=kind, model_config=model_config, train_config=train_config,
                             tokens=tokens, objective=objective, row_source=row_source, resume=config.resume,
                             force=config.force, extra={"preset": config.preset}))
