"""The one training loop: teacher, baseline and student differ only in their `Objective`.

Per epoch: train on this rank's share of the block-shuffled windows, then (rank 0) evaluate held-out and
train-subset perplexity, append a line to metrics.jsonl and write a checkpoint atomically. Interrupting
(Ctrl-C or SIGTERM) only sets a flag that the loop reads between steps, so the mid-epoch checkpoint it then
saves is exactly the state an uninterrupted run has there, and `--resume` continues identically. A second
Ctrl-C stops at once without saving (the last checkpoint stays). `--resume` refuses a run whose identity
(pipeline/run_identity.py) differs from the checkpoint's. A non-finite loss stops training before the
optimizer applies it (on CPU, every step; on CUDA, checked every STEP_LOG_EVERY steps to avoid a sync
per step, and nothing is saved after it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from pipeline import __version__, checkpoint
from pipeline.batching import BatchStream, RowSource, WindowPlan
from pipeline.config import ModelConfig, TrainConfig, resolved_precision, to_dict
from pipeline.distributed import DistContext, device_type, resolve_device, setup, teardown
from pipeline.errors import DivergedRun, InterruptedRun, UserError
from pipeline.evaluation import Perplexity, eval_span, perplexity
from pipeline.interrupts import StopRequests
from pipeline.model_families import build_model
from pipeline.objectives import Objective
from pipeline.progress import ProgressBar, log
from pipeline.run_dir import RunDir
from pipeline.run_identity import differences, run_identity
from pipeline.storage import check_apart
from pipeline.tensorboard_log import TensorBoardMirror
from pipeline.token_store import TokenStore

STEP_LOG_EVERY = 10  # steps between lines in steps.jsonl


@dataclass
class TrainingRun:
    """Everything one run of the loop needs."""

    out: Path
    kind: str  # "teacher" | "baseline" | "student"
    model_config: ModelConfig
    train_config: TrainConfig
    tokens: TokenStore
    objective: Objective
    row_source: RowSource | None = None
    resume: bool = False
    force: bool = False
    inputs: dict[str, str | None] = field(default_factory=dict)
    """The command's inputs ({option: location}); `out` must lie apart from all of them."""
    teacher_identity: str | None = None
    """What the teacher term reads (logit store fingerprint, or online teacher checkpoint sha256)."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _State:
    epoch: int = 1  # epoch in progress (1-based)
    step: int = 0  # steps done within it
    global_step: int = 0
    tokens_seen: int = 0
    wall_time_s: float = 0.0


def train(run: TrainingRun) -> dict[str, Any]:
    """Run (or resume) training; returns the last epoch's metrics."""
    context = setup(device_type(run.train_config.device))
    try:
        return _Trainer(run, context).fit()
    finally:
        teardown(context)


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    return torch.bfloat16 if resolved_precision(config.precision, device.type) == "bf16" else None


def _lr_lambda(config: TrainConfig, total_steps: int):
    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.lr_schedule == "cosine":
            progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0
    return factor


class _Trainer:
    def __init__(self, run: TrainingRun, context: DistContext):
        self.run, self.ctx, self.cfg = run, context, run.train_config
        self.device = resolve_device(self.cfg.device, context)
        self.amp = _autocast_dtype(self.cfg, self.device)
        self.dir = RunDir(run.out)
        check_apart(run.out, {"--tokens": run.tokens.location, **run.inputs})
        self._check_fit()
        self.state = _State()
        torch.manual_seed(self.cfg.seed)
        self.model = build_model(run.model_config).to(self.device)
        self.train_ids, self.val_ids = run.tokens.read("train"), run.tokens.read("val")
        if self.val_ids.size < 2:
            log(f"warning: {run.tokens.location} has no held-out split; only train-subset perplexity is measured "
                f"(tokenize with --val-fraction > 0 for an honest held-out number)", context)
        plan = WindowPlan(self.train_ids.size, run.model_config.context, self.cfg.shuffle_block_tokens, self.cfg.seed)
        self.stream = BatchStream(self.train_ids, plan, self.cfg.batch_size, context.rank, context.world, run.row_source)
        self.steps = self._steps_per_epoch(1)
        self.eval_steps = self.cfg.eval_steps(self.steps, self.cfg.batch_size * run.model_config.context * context.world)
        if self.steps == 0:
            raise UserError(f"--tokens {run.tokens.location}: the train split ({self.train_ids.size:,} tokens) is too "
                            f"small for one batch of {self.cfg.batch_size} windows of {run.model_config.context} "
                            f"tokens; lower the batch size or context")
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(self.cfg, self.steps * self.cfg.epochs))
        self.identity = run_identity(run.model_config, self.cfg, run.objective.describe(), run.tokens.fingerprint,
                                     run.teacher_identity)
        self.last_saved: str | None = None  # where the newest checkpoint stands, for messages
        if self.cfg.logger == "tensorboard":
            TensorBoardMirror.summary_writer_class()  # a missing package fails before the run directory exists
        self.dir.prepare(run.resume, run.force, context)
        if run.resume:
            self._restore()
        self.forward_model = self._wrap(self.model)
        self.stops = StopRequests(context)
        self._phase: str | None = None  # the schedule's phase at the last step (a change is logged)

    def _steps_per_epoch(self, epoch: int) -> int:
        steps = self.stream.steps_per_epoch(epoch)
        return min(steps, self.cfg.max_steps_per_epoch) if self.cfg.max_steps_per_epoch else steps

    def _check_fit(self) -> None:
        if self.run.model_config.vocab_size != self.run.tokens.vocab_size:
            raise UserError(f"model vocabulary ({self.run.model_config.vocab_size}) != token store vocabulary "
                            f"({self.run.tokens.vocab_size}) of {self.run.tokens.location}")

    def _optimizer(self) -> torch.optim.Optimizer:
        cls = torch.optim.AdamW if self.cfg.weight_decay else torch.optim.Adam
        return cls(self.model.parameters(), lr=self.cfg.lr, betas=self.cfg.betas, eps=self.cfg.eps,
                   weight_decay=self.cfg.weight_decay)

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.cfg.compile:
            model = torch.compile(model)
        if self.ctx.enabled:
            model = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return model

    def _restore(self) -> None:
        payload = checkpoint.load(self.dir.checkpoint_path, "--resume")
        saved = payload.get("identity") or {"model": payload["model_config"]}  # format 1 recorded the model only
        current = self.identity if "identity" in payload else {"model": self.identity["model"]}
        changed = differences(saved, current)
        if changed:
            raise UserError(f"--resume: {self.run.out} is a different run: {'; '.join(changed[:4])}"
                            f"{' ...' if len(changed) > 4 else ''}; resume with the original settings and inputs, "
                            f"or start a new run in another --out")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        checkpoint.set_rng_state(payload["rng"])
        self.state = _State(**payload["position"])
        self.run.objective.load_state(payload.get("objective_state") or {})
        self.last_saved = self._where()
        log(f"resuming {self.run.out} at epoch {self.state.epoch}, step {self.state.step}", self.ctx)

    def _where(self) -> str:
        return f"epoch {self.state.epoch}, step {self.state.step}"

    def run_record(self) -> dict[str, Any]:
        return {"kind": self.run.kind, "name": self.run.out.name, "model": to_dict(self.run.model_config),
                "train": to_dict(self.cfg), "superstill": self.run.objective.describe(),
                "parameters": self.model.num_parameters(), "tool_version": __version__, "world_size": self.ctx.world,
                "device": str(self.device), "tokens": {"location": self.run.tokens.location,
                                                        "fingerprint": self.run.tokens.fingerprint},
                **self.run.extra}

    def fit(self) -> dict[str, Any]:
        log(f"{self.run.kind}: {self.model.num_parameters():,} parameters, {self.steps} steps/epoch "
            f"x {self.cfg.epochs} epochs on {self.device} (world {self.ctx.world})", self.ctx)
        if self.ctx.is_main:
            self.dir.write_run(self.run_record(), self._history_event(), self.run.resume)
        last: dict[str, Any] = {}
        self._stretch_started = time.perf_counter()
        if self.ctx.is_main and self.cfg.logger == "tensorboard":
            self.dir.mirror = TensorBoardMirror(self.dir.path)
        try:
            with self.stops:
                while self.state.epoch <= self.cfg.epochs:
                    last = self._epoch()
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, mid-step, and keep the last checkpoint
            raise InterruptedRun(f"stopped at once; {self._kept()}; re-run the same command with --resume "
                                 f"to continue from there") from None
        finally:
            if self.dir.mirror is not None:
                self.dir.mirror.close()
        return last

    def _history_event(self) -> dict[str, Any]:
        return {"event": "resume" if self.run.resume else "start",
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "epoch": self.state.epoch,
                "step": self.state.step, "epochs": self.cfg.epochs, "device": str(self.device),
                "world_size": self.ctx.world, "tool_version": __version__}

    def _kept(self) -> str:
        return (f"the checkpoint in {self.run.out} is at {self.last_saved}" if self.last_saved
                else f"no checkpoint was saved in {self.run.out}")

    def _account_time(self) -> float:
        """Add the stretch since the last call to the run's wall time; returns the stretch."""
        now = time.perf_counter()
        stretch, self._stretch_started = now - self._stretch_started, now
        self.state.wall_time_s += stretch
        return stretch

    def _stop_if_requested(self) -> None:
        """Between steps: on Ctrl-C/SIGTERM save this exact state and stop."""
        if self.stops.requested():
            self._account_time()
            self._save()
            raise InterruptedRun(f"interrupted at {self._where()}; checkpoint saved in {self.run.out}; re-run the "
                                 f"same command with --resume to continue") from None

    def _epoch(self) -> dict[str, Any]:
        epoch, steps = self.state.epoch, self._steps_per_epoch(self.state.epoch)
        sums: dict[str, torch.Tensor] = {}
        count, train_seconds, tokens_per_step = 0, 0.0, self.cfg.batch_size * self.run.model_config.context
        bar = ProgressBar(steps, self.state.step, f"epoch {epoch}/{self.cfg.epochs}", tokens_per_step * self.ctx.world,
                          self.ctx)
        self.model.train()
        self._stop_if_requested()
        batches = self.stream.epoch(epoch, self.state.step, self.run.objective.uses_teacher(epoch))
        for batch in batches:
            if self.state.step >= steps:
                break
            elapsed = epoch - 1 + self.state.step / steps
            self._note_schedule(epoch, elapsed)
            terms = self._step(batch, epoch, elapsed)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0) + value
            count += 1
            self.state.step += 1
            self.state.global_step += 1
            self.state.tokens_seen += tokens_per_step * self.ctx.world
            bar.update(terms)
            if self.ctx.is_main and self.state.global_step % STEP_LOG_EVERY == 0:
                self.dir.append_step({"epoch": epoch, "step": self.state.global_step,
                                      "tokens_seen": self.state.tokens_seen, **_floats(terms),
                                      "lr": self.scheduler.get_last_lr()[0]})
            if self.eval_steps and self.state.step % self.eval_steps == 0 and self.state.step < steps:
                train_seconds += self._account_time()
                self._evaluate_point(epoch, steps)  # its time is reported apart (eval_time_s)
            if self.cfg.checkpoint_every and self.state.step % self.cfg.checkpoint_every == 0 and self.state.step < steps:
                train_seconds += self._account_time()
                self._save()
            if self.state.step < steps:
                self._stop_if_requested()
        bar.close()
        train_seconds += self._account_time()
        means = {k: self.ctx.all_reduce_sum(float(v)) / (count * self.ctx.world) for k, v in sums.items()} if count else {}
        record = self._end_epoch(epoch, means, count * tokens_per_step * self.ctx.world / max(train_seconds, 1e-9))
        return record

    def _step(self, batch, epoch: int, elapsed: float) -> dict[str, torch.Tensor]:
        batch.inputs, batch.targets = batch.inputs.to(self.device, non_blocking=True), batch.targets.to(self.device, non_blocking=True)
        if batch.teacher is not None:
            batch.teacher = batch.teacher.to(self.device)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            result = self.run.objective(self.forward_model, batch, epoch, elapsed)
        self._check_finite(result.loss, epoch)
        self.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": result.loss.detach(), **result.terms}

    def _note_schedule(self, epoch: int, elapsed: float) -> None:
        """A "schedule" event in metrics.jsonl when the teacher weight's phase changes (and at the start)."""
        phase = self.run.objective.schedule_phase(epoch, elapsed)
        if phase is None or phase[0] == self._phase:
            return
        self._phase = phase[0]
        if self.ctx.is_main:
            w_teacher, w_data = self.run.objective.weights(epoch, elapsed)
            self.dir.append_metrics({"event": "schedule", "epoch": epoch, "step": self.state.global_step,
                                     "tokens_seen": self.state.tokens_seen, "phase": phase[0], "w_teacher": w_teacher,
                                     "w_data": w_data, "reason": phase[1]})

    def _check_finite(self, loss: torch.Tensor, epoch: int) -> None:
        """Stop before a non-finite loss reaches the weights (CPU: every step; CUDA: every few, no sync per step)."""
        if self.device.type == "cuda" and (self.state.global_step + 1) % STEP_LOG_EVERY:
            return
        if not bool(torch.isfinite(loss.detach())):
            raise DivergedRun(f"training diverged: the loss is {float(loss.detach()):g} at epoch {epoch}, step "
                              f"{self.state.step + 1} (global step {self.state.global_step + 1}); {self._kept()}; "
                              f"lower the learning rate (train.lr {self.cfg.lr:g}) or check the inputs, then start "
                              f"over with --force or --resume from that checkpoint")

    def _end_epoch(self, epoch: int, means: dict[str, float], tokens_per_s: float) -> dict[str, Any]:
        steps = self._steps_per_epoch(epoch)
        point = self._evaluate_point(epoch, steps)
        record: dict[str, Any] = {}
        if self.ctx.is_main:
            record = {**point, "event": "epoch",
                      "loss": means.get("loss"), "loss_data": means.get("loss_data"),
                      "loss_teacher": means.get("loss_teacher"), "tokens_per_s": round(tokens_per_s, 1),
                      "lr": self.scheduler.get_last_lr()[0], "data_wait_s": round(self.stream.wait_seconds, 3)}
            self.dir.append_metrics(record)
            log(f"epoch {epoch}: val ppl {_shown(record['val_ppl'])}, train-subset ppl {record['train_ppl']:.2f}, "
                f"{tokens_per_s:,.0f} tokens/s", self.ctx)
        self.state.epoch, self.state.step = epoch + 1, 0
        self._save()
        self.ctx.barrier()
        return record

    def _evaluate_point(self, epoch: int, steps: int) -> dict[str, Any]:
        """Rank 0 evaluates held-out and train-subset perplexity now and logs an "eval" event (other ranks
        wait); returns its record ({} on other ranks). Evaluation draws no randomness: training is unchanged."""
        record: dict[str, Any] = {}
        if self.ctx.is_main:
            started = time.perf_counter()
            train_subset = self.evaluate("train")
            val = self.evaluate("val") if self.val_ids.size >= 2 else Perplexity(nll=float("nan"), tokens=0)
            weights = self.run.objective.weights if self.run.objective.describe() else None
            elapsed = epoch - 1 + self.state.step / steps
            record = {"event": "eval", "epoch": epoch, "step": self.state.global_step,
                      "tokens_seen": self.state.tokens_seen, "wall_time_s": round(self.state.wall_time_s, 3),
                      "eval_time_s": round(time.perf_counter() - started, 3), "train_ppl": train_subset.ppl,
                      "train_nll": train_subset.nll, "train_eval_tokens": train_subset.tokens,
                      "val_ppl": _finite(val.ppl), "val_nll": _finite(val.nll), "val_eval_tokens": val.tokens,
                      "superstill": self.run.objective.uses_teacher(epoch),
                      "w_teacher": weights(epoch, elapsed)[0] if weights else None}
            self.dir.append_metrics(record)
        measured = record.get("val_nll")
        val_nll = self.ctx.all_reduce_sum((math.nan if measured is None else measured) if self.ctx.is_main else 0.0)
        self.run.objective.observe(epoch - 1 + self.state.step / steps, val_nll)  # every rank decides alike
        self._stretch_started = time.perf_counter()
        return record

    def evaluate(self, split: str) -> Perplexity:
        ids = self.val_ids if split == "val" else self.train_ids
        fraction = 1.0 if split == "val" else self.cfg.eval_train_fraction
        span = eval_span(ids.size, fraction, self.cfg.eval_max_tokens)
        return perplexity(self.model, ids[:span], self.run.model_config.context, self.cfg.eval_batch_size,
                          self.device, self.amp, split)

    def _save(self) -> None:
        if self.ctx.is_main:
            checkpoint.save(self.dir.checkpoint_path, model=self.model, optimizer=self.optimizer,
                            scheduler=self.scheduler, model_config=self.run.model_config, train_config=self.cfg,
                            run={"kind": self.run.kind, "token_fingerprint": self.run.tokens.fingerprint,
                                 "superstill": self.run.objective.describe()},
                            position=vars(self.state).copy(), identity=self.identity,
                            objective_state=self.run.objective.state())
        self.last_saved = self._where()


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _finite(value: float) -> float | None:
    """JSON has no NaN: an unmeasured value is null."""
    return None if math.isnan(value) else value


def _floats(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: round(float(value), 5) for name, value in terms.items()}
