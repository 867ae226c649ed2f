"""What a person reads on the console: known third-party noise silenced by name (never a blanket
filter), a console that does not cut lines in files and pipes, and the config printed as a tree."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


# Known-harmless output that is not the user's business, silenced by name (never a blanket filter).
class _DropMessages(logging.Filter):
    def __init__(self, *starts: str) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def _quiet_known_noise() -> None:
    # torch.utils.cpp_extension logs "No CUDA runtime is found, using CUDA_HOME=..." when imported on
    # a machine without CUDA; we build no C++/CUDA extensions, so it says nothing about our runs.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    # Lightning advertises its cloud products (litlogger, litmodels) at every fit, and says at every
    # fit that the configured RichModelSummary replaces its default summary (which is what we want).
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        _DropMessages("💡 Tip", "Trainer already configured with model summary callbacks")
    )
    # Lightning builds torch's LeafSpec, which this torch deprecates (Lightning's to change), and it is
    # printed at every fit.
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    # An epoch of FoodVision Mini is 8 batches, fewer than log_every_n_steps: the per-step logs it
    # warns about are not missed (every metric is also logged per epoch).
    warnings.filterwarnings(
        "ignore", message=r"The number of training batches \(\d+\) is smaller than the logging"
    )
    # Optuna's RDB storage logs alembic's schema set-up ("Context impl SQLiteImpl", "Will assume
    # non-transactional DDL") whenever a study is created or resumed in a database.
    logging.getLogger("alembic").setLevel(logging.WARNING)


_quiet_known_noise()


def console() -> Any:
    """A rich console that cuts nothing at 80 columns when the output is a file or a pipe."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 10_000)


def print_tree(cfg: DictConfig, save_to: Path | None = None) -> None:
    """Print the resolved config as a tree (one branch per group) and save it as YAML; once, on the
    first process (under DDP every process composes the same config)."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", style="bold")
    for group, value in cfg.items():
        branch = tree.add(str(group), style="bold cyan")
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    console().print(tree)
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        save_to.write_text(OmegaConf.to_yaml(cfg, resolve=True))
