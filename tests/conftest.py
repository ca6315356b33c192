"""Shared fixtures (the shipped fixture corpus, one small token store built from it) and the rule
that the suite never skips.

The corpus is tests/fixtures/kjv/ (nine King James Bible books, public domain; see
tests/fixtures/README.md). It ships with the repository, so every test runs on every machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.factories import FIXTURE_CORPUS

# The small store: five of the fixture's books (~50k tokens, well under a second to build). With this
# seed and fraction exactly one book (Ezra) is held out: tests/test_token_store.py checks 4 + 1.
SMALL_STORE_BOOKS = ("daniel.txt", "esther.txt", "ezra.txt", "mark.txt", "ruth.txt")
SMALL_STORE_VOCAB = 2000
SMALL_STORE_VAL_FRACTION = 0.15
SMALL_STORE_SEED = 0


@pytest.fixture(scope="session")
def fixture_corpus() -> Path:
    """The directory of the fixture corpus: one document per .txt file."""
    return FIXTURE_CORPUS


@pytest.fixture(scope="session")
def small_token_store(fixture_corpus, tmp_path_factory):
    """A finished TokenStore of five books (vocabulary 2,000 ids, one book in val), built once
    per session by the real `tokenize` stage; read it, never write to it."""
    from stages.tokenize import TokenizeConfig, run

    out = tmp_path_factory.mktemp("small_token_store") / "tokens"
    config = TokenizeConfig(corpus=[str(fixture_corpus / name) for name in SMALL_STORE_BOOKS], out=str(out),
                            vocab_size=SMALL_STORE_VOCAB, val_fraction=SMALL_STORE_VAL_FRACTION,
                            seed=SMALL_STORE_SEED, workers=1, progress=False)
    return run(config)


# --- no skips ---------------------------------------------------------------------------------
# A skipped test is a test that silently stopped guarding anything, so the suite fails when any
# test or module skips. The rule lives here rather than in .ci/run so that `make test` (and any
# plain pytest run) enforces it too, not only CI. xfail is not a skip (the test still runs).

_SKIPPED: list[str] = []


def _record_skip(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append(report.nodeid or str(report.fspath))


def pytest_runtest_logreport(report) -> None:
    _record_skip(report)


def pytest_collectreport(report) -> None:
    _record_skip(report)  # a module-level skip (pytest.importorskip, skip(allow_module_level=True))


def pytest_terminal_summary(terminalreporter) -> None:
    if _SKIPPED:
        terminalreporter.write_line(f"FAILED: {len(_SKIPPED)} skipped ({', '.join(_SKIPPED[:5])}"
                                    f"{', ...' if len(_SKIPPED) > 5 else ''}): this suite must not skip; "
                                    "make the test run everywhere (see tests/conftest.py)", red=True, bold=True)


def pytest_sessionfinish(session, exitstatus) -> None:
    if _SKIPPED and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def compiled(monkeypatch):
    """torch.compile with backend="aot_eager" (see tests/test_gpu_paths_on_cpu.py's docstring); yields the
    modules compiled. Dynamo's caches are cleared before and after, so no compiled code leaks into other tests."""
    modules, real_compile = [], torch.compile

    def compile_on_cpu(model, **options):
        modules.append(model)
        return real_compile(model, **{**options, "backend": "aot_eager"})

    monkeypatch.setattr(torch, "compile", compile_on_cpu)
    torch._dynamo.reset()
    yield modules
    torch._dynamo.reset()
