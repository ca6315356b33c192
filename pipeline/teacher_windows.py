"""Which teacher window predicts which position, for a context C and stride S (S <= C).

Windows start at 0, S, 2S, ... and cover [w, min(w + C, P)). Window 0 owns positions [0, C); every later
window owns only its last S positions, [w + C - S, w + C), so each position after the first window is
predicted with at least C - S tokens of context (the usual sliding-window evaluation), and each position
is owned by exactly one window. Row p of a logit store is the output of p's owner at offset p - w.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    start: int  # first input position
    stop: int  # one past the last input position
    own_lo: int  # first position whose row this window provides
    own_hi: int  # one past the last


def owner(position: int, context: int, stride: int, n_positions: int) -> Window:
    """The window that provides row `position`."""
    if position < context:
        j = 0
    else:
        j = (position - (context - stride)) // stride
    return _window(j, context, stride, n_positions)


def _window(j: int, context: int, stride: int, n_positions: int) -> Window:
    start = j * stride
    stop = min(start + context, n_positions)
    own_lo = 0 if j == 0 else start + context - stride
    return Window(start, stop, own_lo, stop)


def windows_for(lo: int, hi: int, context: int, stride: int, n_positions: int) -> list[Window]:
    """The owner windows of positions [lo, hi), each clipped to own only positions inside [lo, hi)."""
    if hi <= lo:
        return []
    first, last = owner(lo, context, stride, n_positions), owner(hi - 1, context, stride, n_positions)
    result = []
    for j in range(first.start // stride, last.start // stride + 1):
        window = _window(j, context, stride, n_positions)
        own_lo, own_hi = max(window.own_lo, lo), min(window.own_hi, hi)
        if own_lo < own_hi:
            result.append(Window(window.start, window.stop, own_lo, own_hi))
    return result
