"""`python -m pipeline ...` is the `pipeline` command (used under `torchrun -m pipeline` too)."""

from pipeline.cli import main

main()
