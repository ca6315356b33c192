"""`pipeline tokenize CORPUS... --out DIR`: build a token store from text files."""

from __future__ import annotations

import time

import click

from pipeline.tokenizer import default_workers


@click.command("tokenize")
@click.argument("corpus", nargs=-1, required=True)
@click.option("--out", required=True, help="Token store to write (a directory, or an fsspec URL).")
@click.option("--vocab-size", type=int, default=50000, show_default=True,
              help="Ids in total, <unk> and <eod> included; rarer words become <unk>.")
@click.option("--val-fraction", type=float, default=0.05, show_default=True,
              help="Share of tokens held out for validation, as whole documents.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds which documents are held out.")
@click.option("--keep-case", is_flag=True, help="Keep letter case (the default lowercases).")
@click.option("--workers", type=int, default=default_workers(), show_default=True,
              help="Tokenizer processes (default: CPU cores, at most 8).")
@click.option("--force", is_flag=True, help="Replace an existing store at --out.")
def command(corpus, out, vocab_size, val_fraction, seed, keep_case, workers, force) -> None:
    """Tokenize CORPUS (.txt files and directories of them) with spaCy into a token store.

    Each file is one document; Project Gutenberg headers and footers are removed. Files that are
    not UTF-8 text, or are empty, are skipped with a warning and listed in the store's manifest.
    """
    from stages.tokenize import TokenizeConfig, run  # deferred: keeps `pipeline --help` fast

    config = TokenizeConfig(corpus=list(corpus), out=out, vocab_size=vocab_size, val_fraction=val_fraction,
                            seed=seed, lowercase=not keep_case, workers=workers, force=force)
    started = time.perf_counter()
    store = run(config)
    seconds = time.perf_counter() - started
    skipped = [entry for entry in store.meta.manifest if "skipped" in entry]
    if skipped:
        listing = "; ".join(f"{entry['path']} ({entry['skipped']})" for entry in skipped)
        click.echo(f"Warning: skipped {len(skipped)} of {len(store.meta.manifest)} files: {listing}", err=True)
    counts = store.meta.counts
    if val_fraction > 0 and counts["val_documents"] == 0:
        click.echo("Warning: the validation split is empty: it is made of whole documents and there is only "
                   "one; split the corpus into several files to hold some out", err=True)
    words = sum(entry.get("tokens", 0) for entry in store.meta.manifest)
    click.echo(f"wrote {out}: {counts['train_tokens']:,} train and {counts['val_tokens']:,} val ids "
               f"({counts['train_documents']} + {counts['val_documents']} documents), vocabulary "
               f"{store.vocab_size:,} ids, {counts['unk_tokens']:,} <unk>; "
               f"{seconds:.1f} s, {words / max(seconds, 1e-9):,.0f} tokens/s")
