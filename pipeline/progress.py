"""Progress for long jobs: a tqdm bar with tokens/s and ETA on a terminal, periodic lines otherwise."""

from __future__ import annotations

import sys
import time

import click
from tqdm import tqdm

from pipeline.distributed import DistContext

PLAIN_EVERY_S = 30.0  # seconds between progress lines when stderr is not a terminal (CI logs, nohup)


def log(message: str, context: DistContext | None = None) -> None:
    """A line on stderr, from rank 0 only."""
    if context is None or context.is_main:
        click.echo(message, err=True)


class ProgressBar:
    """Steps done / total with tokens/s and ETA; silent on ranks other than 0."""

    def __init__(self, total: int, initial: int, desc: str, tokens_per_step: int, context: DistContext | None = None,
                 unit: str = "step"):
        self.enabled = context is None or context.is_main
        self.tty = sys.stderr.isatty()
        self.total, self.done, self.desc, self.tokens_per_step = total, initial, desc, tokens_per_step
        self.started = self.last_line = time.perf_counter()
        self.initial, self.unit = initial, unit
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=False,
                        file=sys.stderr) if self.enabled and self.tty else None

    def update(self, terms: dict | None = None, steps: int = 1) -> None:
        self.done += steps
        if not self.enabled:
            return
        now = time.perf_counter()
        rate = (self.done - self.initial) * self.tokens_per_step / max(now - self.started, 1e-9)
        if self.bar is not None:
            self.bar.update(steps)
            if self.done % 10 == 0 or self.done == self.total:
                postfix = {"tok/s": f"{rate:,.0f}"}
                if terms and "loss" in terms:
                    postfix["loss"] = f"{float(terms['loss']):.3f}"
                self.bar.set_postfix(postfix, refresh=False)
        elif now - self.last_line >= PLAIN_EVERY_S:
            self.last_line = now
            remaining = (self.total - self.done) * self.tokens_per_step / max(rate, 1e-9)
            log(f"{self.desc}: {self.done}/{self.total} {self.unit}s, {rate:,.0f} tokens/s, ETA {remaining:,.0f}s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
