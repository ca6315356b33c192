"""Options shared by the training commands (train-teacher, train-student)."""

from __future__ import annotations

import click

from pipeline.config import PRESETS


def training_options(default_preset: str):
    """Decorator adding the preset/override/resume options every training command takes."""
    options = [
        click.option("--tokens", required=True, help="Token store (from `pipeline tokenize`)."),
        click.option("--out", required=True, help="Run directory to write (run.json, metrics.jsonl, checkpoint.pt)."),
        click.option("--preset", default=default_preset, type=click.Choice(list(PRESETS)), help="Model/training preset."),
        click.option("--epochs", type=int, default=None, help="Epochs (default: the preset's)."),
        click.option("--batch-size", type=int, default=None, help="Windows per step per process (default: the preset's)."),
        click.option("--lr", type=float, default=None, help="Adam learning rate (default: the preset's)."),
        click.option("--seed", type=int, default=None, help="Seed for init, dropout and data order (default 0)."),
        click.option("--device", default=None, help="auto | cpu | cuda | cuda:N (default auto)."),
        click.option("--config", "config_file", default=None, help="TOML file with [model] and [train] tables."),
        click.option("--model", "model_file", default=None, metavar="FILE",
                     help="Model spec (TOML or JSON) of any family: gpt, hf (a transformers architecture) or factory "
                          "(your own function); see README 'Bring your own architecture'."),
        click.option("--set", "settings", multiple=True, metavar="SECTION.FIELD=VALUE",
                     help="Override any setting, e.g. --set model.n_layer=6 --set train.lr_schedule=cosine "
                          "--set model.family=hf --set model.model_type=rwkv --set model.options.hidden_size=256."),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint."),
        click.option("--force", is_flag=True, help="Overwrite an existing run in --out."),
    ]

    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function
    return decorate


def shortcut_overrides(epochs, batch_size, lr, seed, device) -> dict:
    return {"train.epochs": epochs, "train.batch_size": batch_size, "train.lr": lr, "train.seed": seed,
            "train.device": device}
