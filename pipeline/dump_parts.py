"""A dump split across machines without torchrun: `dump-teacher --part I/N`.

Job arrays or several hosts writing to one bucket each run the same command with their own I. Part I
owns the shards s with s % N == I - 1, the rule torchrun ranks use (s % world == rank), so any mix of
parts writes every shard exactly once. Under torchrun inside a part, the part's own shards are dealt to
its ranks the same way (the j-th shard of the part, j = s // N, goes to rank j % world).

There is no coordinator: whichever part starts first creates the store, the others join it (refusing
one created with different settings: teacher, tokens, k, temperatures, ...), and whichever part finds
every shard written when it is done finishes it (statistics, card, `complete: true`).
`pipeline store status STORE` lists the shards still missing and, given N, which part owns them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import UserError
from pipeline.storage import check_writable, exists
from pipeline.store_checks import object_path

if TYPE_CHECKING:
    from pipeline.distributed import DistContext
    from pipeline.logit_store import LogitStore, LogitStoreMeta, LogitStoreWriter

PART_FORMAT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
JOIN_WAIT_S, JOIN_POLL_S = 30.0, 0.5  # a part that loses the race to create waits this long for the winner


@dataclass(frozen=True)
class Part:
    """Part `index` (1-based) of `count` parts of a dump."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise UserError(f"--part {self.index}/{self.count}: the part index must be between 1 and {max(self.count, 1)}; "
                            f"write I/N with 1 <= I <= N, e.g. --part 1/4")

    @classmethod
    def parse(cls, text: str | None, option: str = "--part") -> "Part":
        """"I/N" -> Part(I, N); None or "" -> the whole dump (1/1)."""
        if text is None or not str(text).strip():
            return cls()
        match = PART_FORMAT.match(str(text))
        if not match:
            raise UserError(f"{option} {text!r}: expected I/N (this is part I of N), e.g. {option} 2/4")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def whole(self) -> bool:
        return self.count == 1

    def owns(self, shard: int, rank: int = 0, world: int = 1) -> bool:
        """Whether this part (and, under torchrun, this rank of it) computes `shard`."""
        return shard % self.count == self.index - 1 and (shard // self.count) % world == rank

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def owner(shard: int, parts: int) -> int:
    """The 1-based part of `parts` that owns `shard`."""
    return shard % parts + 1


def wait_for_store(location: str, opened, wait_s: float = JOIN_WAIT_S, poll_s: float = JOIN_POLL_S):
    """`opened()` once the store another part is creating at `location` has its metadata.

    Two parts that start together may both find no store; one creates it and the other waits here
    (bounded) for the metadata, which `create` writes last. Other errors pass through at once."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return opened()
        except UserError as error:
            if "not a logit store" not in str(error) and "no such" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(poll_s)


def unwritten_shards(store: "LogitStore") -> dict[str, list[int]]:
    """{split: shards whose completion marker is not set} (empty lists when every shard is written)."""
    return {split: sorted(set(range(store.meta.n_shards(split))) - store.completed_shards(split))
            for split in store.meta.splits}


def open_part_store(location: str, meta: "LogitStoreMeta", part: Part, context: "DistContext") -> "LogitStoreWriter | None":
    """The store this part writes into: created if no part has yet, else joined; None when it is complete.

    Joining refuses a store begun with other content settings (teacher, tokens, k, temperatures, ...) or
    split into another number of parts. Creating never deletes anything (`create(shared=True)`), so two
    parts that start together cannot wipe each other's shards; the loser of that race joins."""
    from zarr.errors import ContainsArrayError

    from pipeline.logit_store import LogitStore, LogitStoreWriter

    def reopen() -> LogitStore:
        return LogitStore.open(location, require_complete=False, option="--out", check_files=False)

    if context.is_main:
        if not exists(object_path(location, "zarr.json")):
            check_writable(location, force=False)  # something else already there is never written into
            try:
                LogitStoreWriter.create(location, meta, shared=True)
            except ContainsArrayError:
                pass  # another part created it first
        _check_joinable(wait_for_store(location, reopen), meta, part)
    context.barrier()
    if reopen().meta.complete:
        return None
    return LogitStoreWriter.open_for_writing(location, meta)


def _check_joinable(store: "LogitStore", meta: "LogitStoreMeta", part: Part) -> None:
    diffs = store.meta.differences(meta)
    if diffs:
        raise UserError(f"--part {part}: {store.location} was started by a part with other settings "
                        f"({'; '.join(diffs)}); every part must use the same checkpoint, tokens and options")
    parts = store.meta.provenance.get("parts", 1)
    if parts != part.count:
        raise UserError(f"--part {part}: {store.location} is being dumped in {parts} part(s), not {part.count}; "
                        f"use --part I/{parts} (`pipeline store status {store.location}` lists what is missing)")


def finishing_writer(location: str, meta: "LogitStoreMeta") -> "tuple[LogitStoreWriter | None, dict[str, list[int]]]":
    """(writer to finish the store with, {}) when every shard is written and the store is not complete yet;
    (None, missing shards by split) otherwise ((None, {}) when another part has already finished it)."""
    from pipeline.logit_store import LogitStore, LogitStoreWriter

    store = LogitStore.open(location, require_complete=False, option="--out", check_files=False)
    if store.meta.complete:
        return None, {}
    missing = {split: shards for split, shards in unwritten_shards(store).items() if shards}
    return (None, missing) if missing else (LogitStoreWriter.open_for_writing(location, meta), {})
