"""The provenance block every benchmark writes into its results: what ran, on which code, on which machine, when.

One block per results file (JSON key ``"provenance"``) and the same facts as the first lines of its markdown:

* ``command``: the command line as run from the repository root (long free-text options shown as ``"..."``);
* ``commit``: ``git rev-parse HEAD`` of the repository; ``dirty``: whether the working tree differed from it
  (modified tracked files or untracked files that git does not ignore), with the names in ``modified`` and
  ``untracked``: a dirty run was measured on code that no commit holds;
* ``cpu_model`` (``/proc/cpuinfo``'s model name), ``cpu_count`` (``os.cpu_count()``), ``torch_threads``
  (``torch.get_num_threads()`` when the run finished) and ``OMP_NUM_THREADS``;
* ``load_average_before`` and ``load_average_after`` (1, 5 and 15 minutes, ``os.getloadavg()``), read when the
  benchmark starts and when it writes its results: on a shared machine a wall time means little without them;
* ``gemm_gflops``, when the benchmark measured it: the machine's fp32 GEMM rate in that run (a speed figure means
  little without the machine's own speed; ``bench_end_to_end.py`` measures it with ``bench_network.ReferenceGemm``);
* ``started`` and ``finished`` (UTC).

A field that could not be read is ``"unknown"``, never guessed. Usage::

    meta = results_metadata.start(results_metadata.command_line("bench_x.py", argv))
    ...                                       # the benchmark
    record["provenance"] = results_metadata.finish(meta)
    lines = results_metadata.markdown_lines(record["provenance"]) + [...]
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNKNOWN = "unknown"
#: options whose value is prose for the results file, shown as "..." in the recorded command
FREE_TEXT_OPTIONS = ("--notes",)


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def load_average() -> list[float] | str:
    """The 1, 5 and 15 minute load averages, rounded to 0.01, or ``"unknown"`` where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return UNKNOWN


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``"unknown"`` when it does not say)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return UNKNOWN


def git_state(root: Path | None = None) -> dict:
    """``commit`` (HEAD), ``dirty``, and the ``modified`` tracked and ``untracked`` (not ignored) files of the
    repository at ``root`` (default: this one)."""
    root = ROOT if root is None else root

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        modified = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
        untracked = git("ls-files", "--others", "--exclude-standard").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": UNKNOWN, "dirty": UNKNOWN, "modified": UNKNOWN, "untracked": UNKNOWN}
    return {"commit": commit, "dirty": bool(modified or untracked), "modified": modified, "untracked": untracked}


def command_line(script: str, argv: Sequence[str] | None = None, python: str = "python") -> str:
    """``python benchmarks/<script> <args>`` with the value of each free-text option shown as ``"..."``."""
    args = list(sys.argv[1:] if argv is None else argv)
    shown = ['"..."' if i > 0 and args[i - 1] in FREE_TEXT_OPTIONS else a for i, a in enumerate(args)]
    return " ".join([python, f"benchmarks/{Path(script).name}", *shown])


def _torch_threads() -> int | str:
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch
        except ImportError:
            return UNKNOWN
    return int(torch.get_num_threads())


def start(command: str) -> dict:
    """The block as the benchmark starts: command, commit and tree state, CPU, load average before, start time."""
    return {
        "command": command,
        **git_state(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or UNKNOWN,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "not set"),
        "load_average_before": load_average(),
        "started": now(),
    }


def finish(block: dict, **measured) -> dict:
    """A copy of ``block`` completed as the results are written: torch threads, load average after, end time, and
    machine facts the benchmark ``measured`` (e.g. ``gemm_gflops``)."""
    return {
        **block,
        **measured,
        "torch_threads": _torch_threads(),
        "load_average_after": load_average(),
        "finished": now(),
    }


def _commit_text(block: dict) -> str:
    commit = str(block.get("commit", UNKNOWN))
    dirty = block.get("dirty", UNKNOWN)
    if dirty is True:
        modified, untracked = block.get("modified") or [], block.get("untracked") or []
        state = f"dirty tree: {len(modified)} modified tracked, {len(untracked)} untracked files (names in the JSON)"
    elif dirty is False:
        state = "clean tree"
    else:
        state = "tree state unknown"
    return f"{commit} ({state})"


def _load_text(value) -> str:
    return ", ".join(f"{v:.2f}" for v in value) if isinstance(value, (list, tuple)) else str(value)


def markdown_lines(block: dict) -> list[str]:
    """The markdown header: command, commit, machine, threads, load before and after, dates (each line ends in
    two spaces, a markdown line break)."""
    lines = [f"Command: `{block.get('command', UNKNOWN)}`  "]
    if block.get("legacy"):
        lines.append(f"Legacy record: {block.get('note', 'written before the provenance block existed')}  ")
    committed = [v["commit"][:7] for v in block.get("committed_versions") or []]
    lines += [
        f"Commit: {_commit_text(block)}"
        + (f"; this file's versions were committed in {', '.join(committed)}" if committed else "")
        + "  ",
        f"Machine: CPU {block.get('cpu_model', UNKNOWN)}, {block.get('cpu_count', UNKNOWN)} cores, torch threads "
        f"{block.get('torch_threads', UNKNOWN)}, OMP_NUM_THREADS {block.get('omp_num_threads', UNKNOWN)}; load "
        f"average (1, 5, 15 min) before {_load_text(block.get('load_average_before', UNKNOWN))}, after "
        f"{_load_text(block.get('load_average_after', UNKNOWN))}"
        + (f"; fp32 GEMM {block['gemm_gflops']} GFLOP/s" if "gemm_gflops" in block else "")
        + "  ",
        f"Date: started {block.get('started', UNKNOWN)}, finished {block.get('finished', UNKNOWN)}  ",
    ]
    return lines
