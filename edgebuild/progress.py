"""What a build tells the person watching it: stages, training epochs, notes, warnings.

Everything goes to stderr so that stdout carries only results. ``quiet`` keeps
warnings and drops the rest (for CI logs).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Reporter:
    """Prints stage lines and epoch progress bars to stderr unless quiet."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False)

    def note(self, message: str) -> None:
        """An informational line (dropped when quiet)."""
        if not self.quiet:
            self.console.print(f"  {message}", markup=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        """A warning line (kept when quiet)."""
        self.console.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)

    def stage_start(self, name: str) -> None:
        """Announce a stage."""
        if not self.quiet:
            self.console.print(f"[bold cyan]▸ {name}[/bold cyan]")

    def stage_end(self, name: str, seconds: float, summary: str) -> None:
        """A stage's time and one-line result."""
        if not self.quiet:
            self.console.print(f"[green]✓ {name}[/green] [dim]{seconds:.1f} s[/dim]  ", end="")
            self.console.print(summary, markup=False, highlight=False, soft_wrap=True)

    def note_table(self, text: str) -> None:
        """A preformatted table for information (dropped when quiet)."""
        if not self.quiet:
            self.console.print(text, markup=False, highlight=False)

    def table(self, text: str) -> None:
        """A preformatted table (kept when quiet: it explains a failure)."""
        self.console.print(text, markup=False, highlight=False)

    @contextmanager
    def epochs(self, what: str, total: int) -> Iterator[EpochBar]:
        """A progress bar over ``total`` training epochs."""
        if self.quiet or total == 0:
            yield EpochBar(None, None)
            return
        progress = Progress(
            TextColumn(f"  {what}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        with progress:
            task = progress.add_task(what, total=total, metrics="")
            yield EpochBar(progress, task)


class EpochBar:
    """Advances one epoch progress bar; does nothing when there is no bar."""

    def __init__(self, progress: Progress | None, task: object):
        self._progress = progress
        self._task = task

    def advance(self, metrics: dict[str, float]) -> None:
        if self._progress is not None:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in ("loss", "accuracy"))
            self._progress.update(self._task, advance=1, metrics=shown)  # type: ignore[arg-type]
