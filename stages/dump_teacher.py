"""`pipeline dump-teacher`: run the frozen teacher once and write its top-k distributions to a logit store.

Shards are the unit of work: under torchrun each rank computes and writes whole shards (zarr rewrites a
whole shard file per write, so two writers of one shard would lose rows), rank 0 alone creates and
finishes the store. `--resume` skips shards whose completion marker is set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.checkpoint import file_sha256, load_model, resolve_path
from pipeline.config import check_device_name, to_dict
from pipeline.distributed import DistContext, device_type, resolve_device, setup, teardown
from pipeline.dump_parts import Part, finishing_writer, open_part_store
from pipeline.dump_spec import DumpSpec
from pipeline.dumping import BackgroundWriter, compute_rows, dump_autocast
from pipeline.errors import UserError
from pipeline.evaluation import perplexity
from pipeline.logit_store import DEFAULT_CODEC, LogitStoreMeta, LogitStoreWriter
from pipeline.progress import ProgressBar, log
from pipeline.sampled_rows import row_maker
from pipeline.spec_parsing import field_names
from pipeline.storage import LOGITS, check_apart, check_writable, exists
from pipeline.store_card import corpus_provenance, teacher_provenance
from pipeline.teacher_windows import windows_for
from pipeline.token_store import SPLITS, TokenStore


@dataclass
class DumpTeacherConfig:
    checkpoint: str
    """Teacher checkpoint file or run directory."""
    tokens: str
    """Token store the teacher reads (its fingerprint is recorded)."""
    out: str
    """Logit store location: local path or fsspec URL."""
    spec: DumpSpec = field(default_factory=DumpSpec)
    """What to compute and how to lay the store out (k, temperatures, stride, shards, codec, precision)."""
    device: str = "auto"
    resume: bool = False
    force: bool = False
    """Replace an existing logit store at `out` (only a logit store)."""
    allow_other_tokens: bool = False
    """Dump even though the checkpoint was trained on other tokens (same vocabulary size)."""
    part: Part = field(default_factory=Part)
    """Write only this part's shards (`--part I/N`, pipeline/dump_parts.py); 1/1 is the whole dump."""

    def __post_init__(self) -> None:
        check_device_name(self.device)
        if self.resume and self.force:
            raise UserError("--resume and --force contradict each other; pick one")
        if self.force and not self.part.whole:
            raise UserError(f"--force with --part {self.part} would delete the shards other parts wrote; remove the "
                            f"store yourself before starting the parts again")

    @classmethod
    def flat(cls, **settings) -> "DumpTeacherConfig":
        """From one flat set of settings, DumpSpec's fields among them (for scripts and tests)."""
        spec = {name: settings.pop(name) for name in field_names(DumpSpec) if name in settings}
        return cls(**settings, spec=DumpSpec(**spec))


def run(config: DumpTeacherConfig) -> dict[str, Any]:
    context = setup(device_type(config.device))
    try:
        return _dump(config, context)
    finally:
        teardown(context)


def _expected_meta(config: DumpTeacherConfig, tokens: TokenStore, model, payload, sha: str,
                   precision: str) -> LogitStoreMeta:
    spec = config.spec
    provenance = {"teacher": teacher_provenance(config.checkpoint, payload, model.num_parameters()),
                  "corpus": corpus_provenance(tokens.meta), **({} if config.part.whole else {"parts": config.part.count})}
    splits = list(SPLITS) if spec.split == "all" else [spec.split]
    return LogitStoreMeta(
        token_fingerprint=tokens.fingerprint, vocab_size=tokens.vocab_size, k=spec.row_width(),
        positions={s: tokens.split_size(s) for s in splits}, context=model.spec.context,
        stride=spec.stride or model.spec.context, temperatures=spec.row_temperatures(), rows=spec.rows,
        samples=spec.samples if spec.rows == "sampled" else 0, sample_seed=spec.sample_seed,
        teacher={"checkpoint_sha256": sha, "model": to_dict(model.spec)}, tokens=str(config.tokens),
        shard_rows=spec.shard_rows, chunk_rows=spec.chunk_rows, codec=spec.codec or DEFAULT_CODEC,
        precision=precision, provenance=provenance)


def _open_store(config: DumpTeacherConfig, meta: LogitStoreMeta, context: DistContext) -> LogitStoreWriter | None:
    if not config.part.whole:  # create or join; None: another part already finished the store
        return open_part_store(config.out, meta, config.part, context)
    if context.is_main:
        if config.resume and exists(config.out):
            LogitStoreWriter.open_for_writing(config.out, meta)  # validates settings before anyone writes
        elif config.resume:
            raise UserError(f"--resume: no logit store at {config.out} to resume; run without --resume")
        elif exists(config.out) and not config.force:
            raise UserError(f"--out {config.out} already exists; pass --resume to finish an interrupted dump "
                            f"or --force to recompute it")
        else:
            check_writable(config.out, config.force, kinds=(LOGITS,))  # --force replaces a logit store, nothing else
            LogitStoreWriter.create(config.out, meta, force=config.force)
    context.barrier()
    return LogitStoreWriter.open_for_writing(config.out, meta)


def _dump(config: DumpTeacherConfig, context: DistContext) -> dict[str, Any]:
    check_apart(config.out, {"--checkpoint": str(resolve_path(config.checkpoint)), "--tokens": config.tokens})
    tokens = TokenStore.open(config.tokens)
    model, payload = load_model(config.checkpoint)
    if model.spec.vocab_size != tokens.vocab_size:
        raise UserError(f"--checkpoint {config.checkpoint} predicts {model.spec.vocab_size} ids but --tokens "
                        f"{config.tokens} has a {tokens.vocab_size}-word vocabulary; use the teacher's token store")
    trained_on = payload.get("run", {}).get("token_fingerprint")
    if trained_on not in (None, tokens.fingerprint) and not config.allow_other_tokens:
        raise UserError(f"--checkpoint {config.checkpoint} was trained on other tokens (fingerprint {trained_on[:16]}) "
                        f"than --tokens {config.tokens} ({tokens.fingerprint[:16]}): its ids may mean other words; "
                        f"use the teacher's token store, or pass --allow-other-tokens if the vocabularies are the same")
    if config.spec.rows == "topk" and config.spec.top_k > tokens.vocab_size:
        raise UserError(f"--top-k {config.spec.top_k} is larger than the vocabulary ({tokens.vocab_size})")
    device = resolve_device(config.device, context)
    amp, precision = dump_autocast(config.spec.precision, device)
    meta = _expected_meta(config, tokens, model, payload, file_sha256(config.checkpoint), precision)
    writer = _open_store(config, meta, context)
    if writer is None:
        log(f"dump-teacher --part {config.part}: {config.out} is already complete; nothing to do", context)
        return {"location": config.out, "positions_computed": 0, "seconds": 0.0, "missing_shards": {}}
    model = model.to(device)
    started = time.perf_counter()
    computed = _write_shards(writer, model, tokens, config, device, amp, context)
    context.barrier()
    seconds = time.perf_counter() - started
    positions = context.all_reduce_sum(float(computed))
    result: dict[str, Any] = {"location": config.out, "positions_computed": int(positions), "seconds": seconds}
    if context.is_main:
        final, missing = ((LogitStoreWriter.open_for_writing(config.out, meta), {}) if config.part.whole
                          else finishing_writer(config.out, meta))
        if final is None:  # a part: others' shards are still missing (or another part finished the store)
            result["missing_shards"] = missing
            log(f"dump-teacher --part {config.part}: {int(positions):,} positions in {seconds:,.1f}s; " +
                (f"{sum(map(len, missing.values()))} shards of other parts still missing "
                 f"(`pipeline store status {config.out}`)" if missing else "another part finished the store"), context)
            return result
        stats = final.finish({"dump_wall_time_s": round(seconds, 3), "positions_per_s": round(positions / max(seconds, 1e-9), 1),
                              "world_size": context.world, "device": str(device), "teacher_parameters": model.num_parameters(),
                              "teacher_eval": _teacher_eval(model, tokens, config.spec.batch_size, device, amp)})
        result.update(stats=stats.stats)
        log(f"dump-teacher: {int(positions):,} positions in {seconds:,.1f}s, "
            f"{stats.stats['bytes_per_position']:.1f} bytes/position -> {config.out}", context)
    return result


def _teacher_eval(model, tokens: TokenStore, batch_size: int, device: torch.device, amp) -> dict[str, Any]:
    """The teacher's held-out cross-entropy, measured as training measures a student's (windows of its context):
    what an auto schedule compares the student against (pipeline/distillation.py)."""
    ids = tokens.read("val")
    if ids.size < 2:
        return {}
    result = perplexity(model, ids, model.spec.context, batch_size, device, amp, "val")
    return {"val_nll": result.nll, "val_ppl": result.ppl, "val_tokens": result.tokens}


def _write_shards(writer: LogitStoreWriter, model, tokens: TokenStore, config: DumpTeacherConfig,
                  device: torch.device, amp, context: DistContext) -> int:
    meta = writer.meta
    done = {split: writer.completed_shards(split) for split in meta.splits}  # one read of the markers per split
    work = [(split, shard) for split in meta.splits for shard in range(meta.n_shards(split))
            if config.part.owns(shard, context.rank, context.world) and shard not in done[split]]
    per_shard = {(s, i): writer.shard_range(s, i) for s, i in work}
    total = sum(hi - lo for lo, hi in per_shard.values())
    bar = ProgressBar(total, 0, "dump-teacher", 1, context, unit="position")
    background = BackgroundWriter(writer.write_shard)
    ids_by_split = {split: tokens.read(split) for split in meta.splits}
    try:
        for split, shard in work:
            lo, hi = per_shard[(split, shard)]
            ids = ids_by_split[split]
            windows = windows_for(lo, hi, meta.context, meta.stride, ids.size)
            rows = compute_rows(model, ids, windows, row_maker(meta, split), config.spec.batch_size, device, amp)
            background.submit(split, shard, rows)
            bar.update(steps=hi - lo)
        background.drain()
    except KeyboardInterrupt:
        background.drain()
        raise UserError(f"interrupted; the shards written so far are kept: re-run with --resume to finish {config.out}") from None
    except OSError as error:
        raise UserError(f"writing {config.out} failed ({error}); free space or fix access, then re-run with --resume") from None
    finally:
        bar.close()
    return total
