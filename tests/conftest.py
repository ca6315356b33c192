"""Shared fixtures: the real Shakespeare corpus, and one small token store built from it.

The corpus lives beside the repository (../shared/corpora/shakespeare) and is never copied into
it; tests that need it skip with the reason when it is absent (fetch it with data/shakespeare.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHAKESPEARE = Path(__file__).resolve().parents[1].parent / "shared/corpora/shakespeare"

# The small store: five of the shorter plays (~100k tokens, ~1 s to build), one of them held out.
SMALL_STORE_PLAYS = ("comedy_of_errors.txt", "macbeth.txt", "midsummer_nights_dream.txt", "tempest.txt",
                     "two_gentlemen_of_verona.txt")
SMALL_STORE_VOCAB = 2000
SMALL_STORE_VAL_FRACTION = 0.15
SMALL_STORE_SEED = 0


@pytest.fixture(scope="session")
def shakespeare_dir() -> Path:
    """The 42-file Shakespeare corpus; skips the test when it is not beside the repository."""
    if not SHAKESPEARE.is_dir():
        pytest.skip(f"Shakespeare corpus not found at {SHAKESPEARE}; run data/shakespeare.py --from-dir or fetch it")
    return SHAKESPEARE


@pytest.fixture(scope="session")
def small_token_store(shakespeare_dir, tmp_path_factory):
    """A finished TokenStore of five plays (vocabulary 2,000 ids, one play in val), built once
    per session by the real `tokenize` stage; read it, never write to it."""
    from stages.tokenize import TokenizeConfig, run

    out = tmp_path_factory.mktemp("small_token_store") / "tokens"
    config = TokenizeConfig(corpus=[str(shakespeare_dir / name) for name in SMALL_STORE_PLAYS], out=str(out),
                            vocab_size=SMALL_STORE_VOCAB, val_fraction=SMALL_STORE_VAL_FRACTION,
                            seed=SMALL_STORE_SEED, workers=1, progress=False)
    return run(config)
