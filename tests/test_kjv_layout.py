"""data/kjv.py: the `bible` program's listing laid out one file per book (no `bible` needed: a synthetic listing)."""

import importlib.util
from pathlib import Path

import pytest

from tests.factories import FIXTURE_CORPUS

SCRIPT = Path(__file__).resolve().parents[1] / "data" / "kjv.py"


@pytest.fixture(scope="module")
def kjv():
    spec = importlib.util.spec_from_file_location("kjv_layout", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def listing_of(kjv, verses_per_book=((1, 1), (1, 2), (2, 1))):
    """A listing in the program's format: every book, in the table's order, with the given (chapter, verse)s."""
    return "".join(f"{key}{chapter}:{verse} Words of {key} {chapter}:{verse}.\n"
                   for key in kjv.BOOKS for chapter, verse in verses_per_book)


def test_each_book_becomes_a_numbered_file_with_its_title_chapters_and_verses(kjv, tmp_path):
    texts = kjv.books(listing_of(kjv))
    keys = list(kjv.BOOKS)
    assert list(texts) == [f"{n:02d}-{kjv.BOOKS[key][0]}.txt" for n, key in enumerate(keys, 1)]
    first = texts[f"01-{kjv.BOOKS[keys[0]][0]}.txt"].splitlines()
    assert first == [kjv.BOOKS[keys[0]][1], "", "Chapter 1", f"Words of {keys[0]} 1:1.", f"Words of {keys[0]} 1:2.",
                     "", "Chapter 2", f"Words of {keys[0]} 2:1."]
    assert kjv.install(texts, tmp_path) == len(texts) and kjv.install(texts, tmp_path) == 0  # idempotent
    assert not list(tmp_path.glob(".*partial*"))


def test_the_fixture_books_have_the_same_layout(kjv):
    """tests/fixtures/kjv/ was made by make_kjv.py in this layout: title, blank, "Chapter 1", verses."""
    titles = {stem: title for stem, title in kjv.BOOKS.values()}
    for path in sorted(FIXTURE_CORPUS.glob("*.txt")):
        lines = path.read_text(encoding="ascii").splitlines()
        assert lines[:3] == [titles[path.stem], "", "Chapter 1"]


@pytest.mark.parametrize("listing, message", [
    (lambda k: listing_of(k).replace("Ge1:1 ", "Genesis 1:1 ", 1), "unexpected line"),
    (lambda k: "".join(reversed(listing_of(k).splitlines(keepends=True))), "in order"),
    (lambda k: listing_of(k).split("Exo1:1")[0], "printed 1 books"),
])
def test_a_listing_that_is_not_the_whole_bible_in_order_is_refused(kjv, listing, message):
    with pytest.raises(kjv.LayoutError, match=message):
        kjv.books(listing(kjv))


def test_install_never_replaces_a_different_file(kjv, tmp_path):
    name = "01-genesis.txt"
    (tmp_path / name).write_text("my own notes\n")
    with pytest.raises(kjv.LayoutError, match="exists and differs"):
        kjv.install({name: "in the beginning\n"}, tmp_path)
    assert (tmp_path / name).read_text() == "my own notes\n"
