"""The store card: README.md at a logit store's root, the dataset-card convention for a shared store.

A team that receives a store (a bucket prefix, a tarball) reads this first: which teacher (architecture,
parameters, checkpoint sha256, held-out perplexity), which tokens (fingerprint, corpus summary), what is
stored (k, temperatures, positions, bytes per position, top-k mass), how to read it with plain zarr and
how to train from it. It is rendered from the store's metadata alone (`LogitStoreMeta`, its
`provenance` included), so a slice's card is as complete as a dump's, and it holds nothing specific to a
run or a location (no timings, no paths of the store itself): a store dumped in parts has the same card
as one dumped whole. `LogitStoreWriter.finish` writes it, atomically, just before it marks the store
complete; `pipeline inspect` prints it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import UserError
from pipeline.run_dir import CHECKPOINT_FILE, read_epochs
from pipeline.storage import atomic_write_text, filesystem, local_path

if TYPE_CHECKING:
    from pipeline.logit_store import LogitStoreMeta
    from pipeline.token_store import TokenStoreMeta

CARD_FILE = "README.md"
MODEL_KEYS = ("n_layer", "d_model", "n_head", "d_ff", "context", "vocab_size", "tie_embeddings", "dropout")


# ---- provenance: what the card says beyond the format's own fields, recorded in the metadata ----------

def teacher_provenance(checkpoint: str, payload: dict[str, Any], parameters: int) -> dict[str, Any]:
    """The teacher as the card describes it: parameters and its held-out perplexity when known.

    The perplexity comes from the teacher's run directory (metrics.jsonl) and only when the checkpoint
    sits at the end of an epoch that was evaluated: a mid-epoch checkpoint's weights were never measured."""
    info: dict[str, Any] = {"parameters": int(parameters), "heldout_ppl": None, "heldout_epoch": None,
                            "kind": (payload.get("run") or {}).get("kind")}
    run_dir = _run_directory(checkpoint)
    position = payload.get("position") or {}
    if run_dir is None or not (run_dir / "metrics.jsonl").is_file() or position.get("step") != 0:
        return info
    try:
        epochs = {record["epoch"]: record for record in read_epochs(run_dir / "metrics.jsonl", [])}
    except UserError:  # a damaged metrics.jsonl costs the card its perplexity, not the dump
        return info
    record = epochs.get(int(position.get("epoch", 0)) - 1)  # the checkpoint was saved after this epoch
    if record is not None and isinstance(record.get("val_ppl"), (int, float)):
        info.update(heldout_ppl=float(record["val_ppl"]), heldout_epoch=int(record["epoch"]),
                    heldout_tokens=record.get("val_eval_tokens"))
    return info


def _run_directory(checkpoint: str) -> Path | None:
    """The run directory a checkpoint belongs to: the directory given, or the one holding checkpoint.pt."""
    path = Path(checkpoint)
    if path.is_dir():
        return path
    return path.parent if path.name == CHECKPOINT_FILE else None


def corpus_provenance(meta: "TokenStoreMeta") -> dict[str, Any]:
    """A summary of the token store's manifest and tokenizer (file names only, never local directories)."""
    used = [entry for entry in meta.manifest if "skipped" not in entry]
    listing = json.dumps([[Path(str(e.get("path", ""))).name, e.get("sha256")] for e in meta.manifest])
    tokenizer = {key: meta.tokenizer[key] for key in ("library", "spacy_version", "language", "lowercase",
                                                       "vocab_size", "val_fraction", "seed") if key in meta.tokenizer}
    return {"files": len(used), "skipped_files": len(meta.manifest) - len(used),
            "bytes": int(sum(int(e.get("bytes", 0)) for e in used)),
            "examples": [Path(str(e.get("path", ""))).name for e in used[:5]],
            "manifest_sha256": hashlib.sha256(listing.encode("utf-8")).hexdigest(),
            "counts": dict(meta.counts), "tokenizer": tokenizer}


# ---- rendering ------------------------------------------------------------------------------------------

def render_card(meta: "LogitStoreMeta") -> str:
    """The card's markdown for a store (complete or about to be marked complete)."""
    temps = ", ".join(f"{t:g}" for t in meta.temperatures)
    title = (f"# Teacher logit store: {meta.samples} ids sampled per position at T = {temps}" if _sampled(meta)
             else f"# Teacher logit store: top-{meta.k} of {meta.vocab_size:,} ids, exact at T = {temps}")
    sections = [_front_matter(meta), title, _intro(meta), _teacher_section(meta), _tokens_section(meta),
                _contents_section(meta)]
    if "sliced_from" in meta.provenance:
        sections.append(_sliced_section(meta.provenance["sliced_from"]))
    sections += [_reading_section(meta), _training_section(meta)]
    return "\n\n".join(sections) + "\n"


def _sampled(meta: "LogitStoreMeta") -> bool:
    """A store of sampled rows (docs/STORE.md section 10) rather than top-k rows."""
    return getattr(meta, "rows", "topk") == "sampled"


def _front_matter(meta: "LogitStoreMeta") -> str:
    """YAML front matter, as dataset cards carry (flat keys, JSON-compatible values)."""
    teacher = meta.teacher.get("checkpoint_sha256", "unknown")
    values = {"format": meta.format, "version": meta.version, "k": meta.k, "vocab_size": meta.vocab_size,
              "temperatures": list(meta.temperatures), "positions": meta.positions,
              "token_fingerprint": meta.token_fingerprint, "teacher_checkpoint_sha256": teacher,
              "precision": meta.precision, "tool_version": meta.tool_version}
    return "\n".join(["---"] + [f"{key}: {json.dumps(value)}" for key, value in values.items()] + ["---"])


def _intro(meta: "LogitStoreMeta") -> str:
    if _sampled(meta):
        return (f"A frozen teacher's next-token distribution for every position of a token store, written by "
                f"superstill {meta.tool_version}: row p holds {meta.samples} ids drawn from the teacher's distribution "
                f"of token p + 1 given the tokens up to p; their counts / {meta.samples} are the soft target. The "
                f"teacher's cost is paid once; any student trained on the same tokens can read it.")
    return (f"A frozen teacher's next-token distribution for every position of a token store, written by "
            f"superstill {meta.tool_version}. Row p of a split is the teacher's distribution of token p + 1 given "
            f"the tokens up to p: its {meta.k} most likely ids with their scores and, for each listed temperature, "
            f"the log-normalizer and the probability outside those {meta.k} ids. The teacher's cost is paid once; "
            f"any student trained on the same tokens can read it.")


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _table(title: str, rows: list[tuple[str, str]]) -> str:
    return "\n".join([f"## {title}", "", "| | |", "|---|---|"] + [f"| {key} | {value} |" for key, value in rows])


def _teacher_section(meta: "LogitStoreMeta") -> str:
    from pipeline.logit_store import PRECISIONS

    teacher = meta.provenance.get("teacher", {})
    model = meta.teacher.get("model") if isinstance(meta.teacher.get("model"), dict) else {}
    shape = ", ".join(f"{key} {model[key]}" for key in MODEL_KEYS if key in model) or "unknown"
    parameters = teacher.get("parameters")
    ppl = teacher.get("heldout_ppl")
    measured = (f"{ppl:.2f} (held-out split, after epoch {teacher.get('heldout_epoch')} of its training run)"
                if isinstance(ppl, (int, float)) else "unknown (no evaluation of this checkpoint was found)")
    return _table("Teacher", [
        ("architecture", f"GPT decoder: {shape}"),
        ("parameters", f"{parameters:,}" if isinstance(parameters, int) else "unknown"),
        ("checkpoint sha256", f"`{meta.teacher.get('checkpoint_sha256', 'unknown')}`"),
        ("held-out perplexity", measured),
        ("precision of the dump", f"`{meta.precision}`: {PRECISIONS.get(meta.precision, '?')}")])


def _tokens_section(meta: "LogitStoreMeta") -> str:
    corpus = meta.provenance.get("corpus")
    rows = [("fingerprint", f"`{meta.token_fingerprint}` (sha256 over the vocabulary and every id; readers "
                            f"refuse other tokens)")]
    counts = corpus.get("counts", {}) if isinstance(corpus, dict) else {}
    documents = {split: counts.get(f"{split}_documents") for split in meta.positions}
    rows.append(("tokens", "; ".join(f"{split} {count:,}" + (f" in {_plural(documents[split], 'document')}"
                                                             if isinstance(documents[split], int) else "")
                                     for split, count in meta.positions.items())))
    if isinstance(corpus, dict) and corpus.get("files"):
        examples = ", ".join(corpus.get("examples", []))
        more = corpus["files"] - len(corpus.get("examples", []))
        tokenizer = corpus.get("tokenizer", {})
        rows += [("corpus", f"{corpus['files']} files, {corpus.get('bytes', 0):,} bytes ({examples}"
                            f"{f', and {more} more' if more > 0 else ''}); {corpus.get('skipped_files', 0)} skipped"),
                 ("tokenizer", ", ".join(f"{key} {value}" for key, value in tokenizer.items()) or "unknown"),
                 ("manifest sha256", f"`{corpus.get('manifest_sha256', 'unknown')}` (file names and their sha256)")]
    else:
        rows.append(("corpus", "not recorded (a token store written without `pipeline tokenize`)"))
    return _table("Tokens", rows)


def _contents_section(meta: "LogitStoreMeta") -> str:
    stats = meta.stats if isinstance(meta.stats, dict) else {}
    positions = "; ".join(f"{split} {count:,} ({_plural(meta.n_shards(split), 'shard')})"
                          for split, count in meta.positions.items())
    mass = stats.get("topk_mass", {}) if isinstance(stats.get("topk_mass"), dict) else {}
    mass_text = "<br>".join(f"{split}: " + "; ".join(f"T = {t}: mean {v['mean']:.4f}, min {v['min']:.4f}"
                                                   for t, v in per_t.items()) for split, per_t in mass.items())
    size = (f"{stats['stored_bytes']:,} bytes, {stats['bytes_per_position']:.1f} bytes per position"
            if isinstance(stats.get("stored_bytes"), int) and isinstance(stats.get("bytes_per_position"), (int, float))
            else "unknown")
    if _sampled(meta):
        from pipeline.sampled_rows import describe

        rows = [("rows", describe(meta))]
    else:
        rows = [("k", f"{meta.k} of {meta.vocab_size:,} ids per position, by descending teacher logit"),
                ("temperatures stored exactly", ", ".join(f"{t:g}" for t in meta.temperatures))]
    return _table("Contents", rows + [
        ("teacher windows", f"context {meta.context}, stride {meta.stride}"),
        ("positions", positions),
        ("size", size)] + ([("top-k mass (1 - tail)", mass_text)] if mass_text else []) + [
        ("layout", f"shards of {meta.shard_rows:,} rows, chunks of {meta.chunk_rows:,}, codec `{meta.codec}` + crc32c, "
                   f"ids {meta.dtypes.get('ids', '?')}")])


def _sliced_section(source: dict[str, Any]) -> str:
    temps = ", ".join(f"{t:g}" for t in source.get("temperatures", []))
    return _table("Cut from a larger store", [
        ("source", f"top-{source.get('k')} at T = {temps}, splits {', '.join(source.get('positions', {}))}"),
        ("source metadata sha256", f"`{source.get('meta_sha256')}` (of its zarr.json `superstill` attribute)"),
        ("source created", str(source.get("created_at"))),
        ("how", "`pipeline store slice`: the first k ids of each row and their scores unchanged, each dropped id's "
                "probability added to the tail at every kept temperature, log-normalizers unchanged")])


def _reading_section(meta: "LogitStoreMeta") -> str:
    split, temp = next(iter(meta.positions)), meta.temperatures[0]
    if _sampled(meta):
        return "\n".join(["## Reading it with zarr and numpy", "",
                          f"The format is `{meta.format}` version {meta.version}, specified in superstill's "
                          f"`docs/STORE.md` (section 10 for sampled rows). In one line: {meta.layout}"])
    return "\n".join([
        "## Reading it with zarr and numpy", "",
        f"The format is `{meta.format}` version {meta.version}, specified in superstill's `docs/STORE.md` "
        f"(`layout` in the metadata says it in one line). zarr-python >= 3 and numpy are enough:", "",
        "```python", "import numpy as np", "import zarr", "",
        'group = zarr.open_group("STORE", mode="r")  # this directory, or its URL (s3://bucket/prefix) with s3fs',
        'meta = group.attrs["superstill"]',
        'assert meta["complete"]',
        f'split, start, stop, T = "{split}", 0, 256, {temp:g}',
        'j = meta["temperatures"].index(T)',
        'ids = group[f"{split}/ids"][start:stop].astype(np.int64)            # [n, k]',
        'deltas = group[f"{split}/score_deltas"][start:stop]                 # [n, k] uint16',
        "scores = np.cumsum(deltas, axis=1, dtype=np.uint16).view(np.float16).astype(np.float32)",
        'logp = scores / T - group[f"{split}/log_normalizer"][start:stop, j][:, None]   # log q_T of ids',
        'tail = group[f"{split}/tail_mass"][start:stop, j]                  # mass outside the top k',
        "```"])


def _training_section(meta: "LogitStoreMeta") -> str:
    temp = max(meta.temperatures)
    return "\n".join([
        "## Training a student from it", "",
        "```bash",
        f"pipeline train-student --tokens TOKENS --teacher-logits STORE --temperature {temp:g} --out RUN",
        "```", "",
        f"TOKENS must be the token store with fingerprint `{meta.token_fingerprint[:16]}...` (the trainer refuses "
        f"any other). STORE may be a local path or a URL (`s3://bucket/prefix` with superstill's `s3` extra; "
        f"credentials from the usual AWS environment variables). {_other_temperatures(meta)} `pipeline validate "
        f"STORE --tokens TOKENS` checks every chunk."])


def _other_temperatures(meta: "LogitStoreMeta") -> str:
    if _sampled(meta):
        return (f"The draws are an unbiased target only at their sampling temperature {meta.temperatures[0]:g}; "
                f"the trainer refuses any other.")
    return ("A temperature that is not listed above works too, with an approximated normalizer (docs/STORE.md "
            "section 5).")


# ---- the file ---------------------------------------------------------------------------------------------

def card_location(location: str) -> str:
    return f"{str(location).rstrip('/')}/{CARD_FILE}"


def write_card(location: str, meta: "LogitStoreMeta") -> None:
    """Write the card atomically: a local file via temp-and-rename, an object in one PUT (readers of an
    object store see the old object or the new one, never part of one)."""
    text = render_card(meta)
    path = local_path(location)
    if path is not None:
        atomic_write_text(path / CARD_FILE, text)
        return
    fs, root = filesystem(card_location(location))
    fs.pipe_file(root, text.encode("utf-8"))


def read_card(location: str) -> str | None:
    """The card's text, or None if the store has none (a store from before cards, or an unfinished one)."""
    fs, root = filesystem(card_location(location))
    try:
        return fs.cat_file(root).decode("utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def card_text(location: str) -> str:
    """The card as `pipeline inspect` prints it after the summary (a note when the store has none)."""
    card = read_card(location)
    if card is None:
        return f"\n\n(no store card: {CARD_FILE} is written when a dump finishes)"
    return f"\n\n--- store card ({card_location(location)}) ---\n{card.rstrip()}"
