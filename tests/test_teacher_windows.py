"""Teacher windows: each position has exactly one owner, with enough context, checked by brute force.

The reference enumerates every window of the documented layout (starts 0, S, 2S, ...; window 0 owns its
whole span, later windows their last S positions) and marks what each owns, position by position.
"""

from __future__ import annotations

import itertools

import pytest

from pipeline.teacher_windows import Window, owner, windows_for

# (context, stride) pairs: stride 1, stride == context, and everything between for small contexts.
SHAPES = [(c, s) for c in range(1, 8) for s in range(1, c + 1)] + [(16, 1), (16, 5), (16, 16), (64, 48)]


def sizes(context: int, stride: int) -> list[int]:
    """Split lengths around the interesting edges: shorter than a window, one window, a partial last stride."""
    picks = {1, 2, context - 1, context, context + 1, context + stride - 1, context + stride,
             2 * context + 1, 3 * context + stride + 2, 50}
    return sorted(n for n in picks if n >= 1)


def reference_owners(context: int, stride: int, n: int) -> list[Window]:
    """Owner of each position in [0, n), from the layout's definition by enumeration."""
    owners: list[list[Window]] = [[] for _ in range(n)]
    for w in range(0, n, stride):
        stop = min(w + context, n)
        own_lo = 0 if w == 0 else w + context - stride
        for p in range(own_lo, stop):
            owners[p].append(Window(w, stop, own_lo, stop))
    assert all(len(o) == 1 for o in owners), "the layout must give every position exactly one owner"
    return [o[0] for o in owners]


@pytest.mark.parametrize("context,stride", SHAPES)
def test_owner_is_the_unique_window_that_provides_each_position(context, stride):
    for n in sizes(context, stride):
        expected = reference_owners(context, stride, n)
        for p in range(n):
            window = owner(p, context, stride, n)
            assert window == expected[p], (p, n)
            assert window.start <= p < window.stop <= n and window.own_lo <= p < window.own_hi
            assert p - window.start < context  # the row is the window's output at offset p - start
            if p >= context:
                assert p - window.start >= context - stride  # at least C - S tokens of context
            else:
                assert window.start == 0  # the first window sees everything before p


@pytest.mark.parametrize("context,stride", SHAPES)
def test_windows_for_covers_a_range_exactly_with_its_owners(context, stride):
    for n in sizes(context, stride):
        ranges = itertools.combinations_with_replacement(range(n + 1), 2) if n <= 20 else \
            [(0, n), (1, n - 1), (context // 2, n), (n // 3, 2 * n // 3), (n - 1, n)]
        for lo, hi in ranges:
            windows = windows_for(lo, hi, context, stride, n)
            covered = [p for w in windows for p in range(w.own_lo, w.own_hi)]
            assert covered == list(range(lo, hi)), (lo, hi, n)  # exactly [lo, hi), disjoint, ascending
            for w in windows:
                assert w.own_lo < w.own_hi
                full = owner(w.own_lo, context, stride, n)
                assert (w.start, w.stop) == (full.start, full.stop)
                assert full.own_lo <= w.own_lo and w.own_hi <= full.own_hi  # clipped, never widened
            assert len({w.start for w in windows}) == len(windows)  # one entry per window


def test_empty_and_reversed_ranges_have_no_windows():
    assert windows_for(5, 5, 8, 4, 20) == []
    assert windows_for(6, 5, 8, 4, 20) == []
