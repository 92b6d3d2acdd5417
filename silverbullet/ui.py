"""The terminal: silverbullet's own stage lines, progress bars and tables go here; everything the
libraries print (progress bars, warnings, loggers, C-level output, worker processes) goes to the
run's `log.txt` unless `-v` asks to see it live.

Why file descriptors and not logger settings: transformers, datasets, TRL, llm-compressor (loguru),
tqdm and vLLM's worker processes each print their own way, several of them to a stream object they
captured at import time. Pointing fds 1 and 2 at the log file catches all of them at once, and our
two consoles keep duplicates of the real terminal.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

err = Console(stderr=True)  # stage lines, progress bars, warnings of ours, errors
out = Console()  # results: tables and paths

_verbose = False
_log_path: Path | None = None
last_log: Path | None = None  # the last file library output went to (named when a command crashes)


def set_verbose(verbose: bool) -> None:
    global _verbose
    _verbose = verbose


def verbose() -> bool:
    return _verbose


def log_path() -> Path | None:
    """The log file library output goes to now (None: the terminal)."""
    return _log_path


@contextmanager
def library_output_to(path: Path | str | None) -> Iterator[None]:
    """Send fds 1 and 2 (and so every library's output, child processes included) to `path` while
    the block runs; our consoles keep writing to the terminal. No-op with -v, with no path, or when
    already capturing (nested commands)."""
    global _log_path, last_log
    if _verbose or path is None or _log_path is not None:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    term_out = os.fdopen(saved[0], "w", buffering=1, encoding="utf-8", errors="replace")
    term_err = os.fdopen(saved[1], "w", buffering=1, encoding="utf-8", errors="replace")
    # The consoles' own setting (None: whatever sys.stdout / sys.stderr are at print time), not the
    # stream it resolves to now: restoring the latter would pin them to a stream a caller swapped in.
    old_files = out._file, err._file
    with open(path, "a", buffering=1, encoding="utf-8") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
        log.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        out.file, err.file = term_out, term_err
        _log_path = last_log = path
        try:
            yield
        finally:
            _log_path = None
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except (OSError, ValueError):  # pragma: no cover - a closed stream at exit
                pass
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            out.file, err.file = old_files
            term_out.close()
            term_err.close()


def note(message: str) -> None:
    """One line of ours for the user (a warning worth reading, reworded; a stage that was skipped)."""
    err.print(message, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m{int(s % 60):02d}s"


class Stage:
    """A transient progress bar for one stage, replaced at its end by one line with its time.

    `update(done, total)` moves the bar; `postfix(text)` shows a short status beside it (the loss of
    a training run, say); `summary` is what the closing line says after the description."""

    def __init__(self, description: str, show: bool = True) -> None:
        self.description = description
        self.show = show
        self.summary = ""
        self.done = 0
        self.total: int | None = None
        self._bar = None
        self._task = None
        self._t0 = 0.0

    def __enter__(self) -> Stage:
        self._t0 = time.time()
        if self.show and err.is_terminal:  # in a log (CI, a pipe) only the closing line is written
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[postfix]}"),
                console=err,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=None, postfix="")
        return self

    def update(self, done: int, total: int | None = None) -> None:
        self.done, self.total = done, total if total is not None else self.total
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=self.total)

    def postfix(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, postfix=text)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
        if self.show and exc_type is None:
            what = self.summary or (f"{self.done}" if self.total else "")
            sep = f" · {what}" if what else ""
            err.print(
                f"[green]✓[/] {self.description}{sep} [dim]({_fmt_seconds(time.time() - self._t0)})[/]",
                highlight=False,
            )
        return False


def stage(description: str, show: bool = True) -> Stage:
    return Stage(description, show)


def progress_callback(st: Stage) -> Callable[[int, int], None]:
    """The `on_progress(done, total)` shape that measure() and friends take."""
    return lambda done, total: st.update(done, total)
