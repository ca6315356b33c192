"""Lay out the second corpus: the King James Bible (1611, public domain), one .txt per book, 66 in all.

    apt-get install bible-kjv                          # as root; brings bible-kjv-text (Debian, 4.38)
    python data/kjv.py --out data/corpora/kjv

The text comes from Debian's `bible-kjv-text` package, printed whole by its `bible` program
(`bible -f Gen1:1-Rev22:21`, 4.4 MB) and checked against a pinned sha256, so every machine gets the same
corpus. Each book becomes `NN-<book>.txt` (NN: its place in the canon, so a sorted listing reads in order):
the book's title, then a "Chapter N" line before each chapter and one verse per line without its reference
("Ge1:1"), the layout of the test fixture (tests/fixtures/make_kjv.py, whose nine books come out
byte-identical here). Re-running is cheap and safe: files already identical are left alone, and each is
written via a temporary name. Standard library only, so it runs before the project is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHOLE_TEXT = "Gen1:1-Rev22:21"
WHOLE_TEXT_SHA256 = "cd45f0c9cedab8e4439bd6486c8952c77cc8b0ecc5d1f6ae3513f2039f47229d"
"""sha256 of `bible -f Gen1:1-Rev22:21` from bible-kjv-text 4.38 (31,102 verses)."""
VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")  # "1Sm1:1 Now there was ..." -> book, chapter, verse, text
# The `bible` program's reference prefix -> (file stem, title), in the order the whole text prints them.
BOOKS = {
    "Ge": ("genesis", "The First Book of Moses, Called Genesis"),
    "Exo": ("exodus", "The Second Book of Moses, Called Exodus"),
    "Lev": ("leviticus", "The Third Book of Moses, Called Leviticus"),
    "Num": ("numbers", "The Fourth Book of Moses, Called Numbers"),
    "Deu": ("deuteronomy", "The Fifth Book of Moses, Called Deuteronomy"),
    "Josh": ("joshua", "The Book of Joshua"),
    "Jdgs": ("judges", "The Book of Judges"),
    "Ruth": ("ruth", "The Book of Ruth"),
    "1Sm": ("1_samuel", "The First Book of Samuel"),
    "2Sm": ("2_samuel", "The Second Book of Samuel"),
    "1Ki": ("1_kings", "The First Book of the Kings"),
    "2Ki": ("2_kings", "The Second Book of the Kings"),
    "1Chr": ("1_chronicles", "The First Book of the Chronicles"),
    "2Chr": ("2_chronicles", "The Second Book of the Chronicles"),
    "Ezra": ("ezra", "The Book of Ezra"),
    "Neh": ("nehemiah", "The Book of Nehemiah"),
    "Est": ("esther", "The Book of Esther"),
    "Job": ("job", "The Book of Job"),
    "Psa": ("psalms", "The Book of Psalms"),
    "Prv": ("proverbs", "The Proverbs"),
    "Eccl": ("ecclesiastes", "Ecclesiastes, or the Preacher"),
    "SSol": ("song_of_solomon", "The Song of Solomon"),
    "Isa": ("isaiah", "The Book of the Prophet Isaiah"),
    "Jer": ("jeremiah", "The Book of the Prophet Jeremiah"),
    "Lam": ("lamentations", "The Lamentations of Jeremiah"),
    "Eze": ("ezekiel", "The Book of the Prophet Ezekiel"),
    "Dan": ("daniel", "The Book of Daniel"),
    "Hos": ("hosea", "Hosea"),
    "Joel": ("joel", "Joel"),
    "Amos": ("amos", "Amos"),
    "Obad": ("obadiah", "Obadiah"),
    "Jonah": ("jonah", "The Book of Jonah"),
    "Mic": ("micah", "Micah"),
    "Nahum": ("nahum", "Nahum"),
    "Hab": ("habakkuk", "Habakkuk"),
    "Zep": ("zephaniah", "Zephaniah"),
    "Hag": ("haggai", "Haggai"),
    "Zec": ("zechariah", "Zechariah"),
    "Mal": ("malachi", "Malachi"),
    "Mat": ("matthew", "The Gospel According to Saint Matthew"),
    "Mark": ("mark", "The Gospel According to Saint Mark"),
    "Luke": ("luke", "The Gospel According to Saint Luke"),
    "John": ("john", "The Gospel According to Saint John"),
    "Acts": ("acts", "The Acts of the Apostles"),
    "Rom": ("romans", "The Epistle of Paul the Apostle to the Romans"),
    "1Cor": ("1_corinthians", "The First Epistle of Paul the Apostle to the Corinthians"),
    "2Cor": ("2_corinthians", "The Second Epistle of Paul the Apostle to the Corinthians"),
    "Gal": ("galatians", "The Epistle of Paul the Apostle to the Galatians"),
    "Eph": ("ephesians", "The Epistle of Paul the Apostle to the Ephesians"),
    "Phi": ("philippians", "The Epistle of Paul the Apostle to the Philippians"),
    "Col": ("colossians", "The Epistle of Paul the Apostle to the Colossians"),
    "1Th": ("1_thessalonians", "The First Epistle of Paul the Apostle to the Thessalonians"),
    "2Th": ("2_thessalonians", "The Second Epistle of Paul the Apostle to the Thessalonians"),
    "1Tim": ("1_timothy", "The First Epistle of Paul the Apostle to Timothy"),
    "2Tim": ("2_timothy", "The Second Epistle of Paul the Apostle to Timothy"),
    "Titus": ("titus", "The Epistle of Paul to Titus"),
    "Phmn": ("philemon", "The Epistle of Paul to Philemon"),
    "Heb": ("hebrews", "The Epistle of Paul the Apostle to the Hebrews"),
    "Jas": ("james", "The General Epistle of James"),
    "1Pet": ("1_peter", "The First Epistle General of Peter"),
    "2Pet": ("2_peter", "The Second Epistle General of Peter"),
    "1Jn": ("1_john", "The First Epistle General of John"),
    "2Jn": ("2_john", "The Second Epistle of John"),
    "3Jn": ("3_john", "The Third Epistle of John"),
    "Jude": ("jude", "The General Epistle of Jude"),
    "Rev": ("revelation", "The Revelation of Saint John the Divine"),
}


class LayoutError(Exception):
    """A problem the user can fix; printed as one line."""


def whole_text() -> str:
    """The `bible` program's listing of every verse, checked against the pinned sha256."""
    if shutil.which("bible") is None:
        raise LayoutError("the `bible` program is missing: apt-get install bible-kjv (it brings bible-kjv-text)")
    listing = subprocess.run(["bible", "-f", WHOLE_TEXT], stdin=subprocess.DEVNULL, capture_output=True,
                             check=True).stdout
    actual = hashlib.sha256(listing).hexdigest()
    if actual != WHOLE_TEXT_SHA256:
        raise LayoutError(f"`bible -f {WHOLE_TEXT}` printed text with sha256 {actual}, expected "
                          f"{WHOLE_TEXT_SHA256} (bible-kjv-text 4.38); install that version")
    return listing.decode("ascii")


def books(listing: str) -> dict[str, str]:
    """{'01-genesis.txt': text, ...}: title, then "Chapter N" and one verse per line."""
    lines: dict[str, list[str]] = {}
    chapter = None
    for raw in listing.splitlines():
        match = VERSE.match(raw)
        if match is None or match[1] not in BOOKS:
            raise LayoutError(f"unexpected line from `bible`: {raw!r}")
        book = lines.get(match[1])
        if book is None:
            book = lines[match[1]] = [BOOKS[match[1]][1]]
            chapter = None
        if match[2] != chapter:
            chapter = match[2]
            book += ["", f"Chapter {chapter}"]
        book.append(match[4].strip())
    if list(lines) != list(BOOKS):
        raise LayoutError(f"`bible` printed {len(lines)} books, expected the {len(BOOKS)} of BOOKS in order")
    return {f"{n:02d}-{BOOKS[key][0]}.txt": "\n".join(text) + "\n" for n, (key, text) in enumerate(lines.items(), 1)}


def install(texts: dict[str, str], out: Path) -> int:
    """Write each text to `out` unless an identical file is there (a different one is refused); returns how many were written."""
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, text in texts.items():
        target, data = out / name, text.encode("ascii")
        if target.is_file() and target.read_bytes() == data:
            continue
        if target.exists():  # never replace a file someone edited or put there
            raise LayoutError(f"{target} exists and differs from the text this script writes; move it away (or delete "
                        f"it) and run again")
        temp = out / f".{name}.partial-{uuid.uuid4().hex[:8]}"  # so an interrupted run leaves no half file
        temp.write_bytes(data)
        os.replace(temp, target)
        written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "data/corpora/kjv",
                        help="directory for the .txt files (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        texts = books(whole_text())
        written = install(texts, args.out)
    except LayoutError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(texts)} books; {written} written, {len(texts) - written} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
