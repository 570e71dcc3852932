"""What a bundle run checks before it loads a model: its output folder, its weights file, and how it stops when one is
wrong (one line, not a traceback).

**Rerun policy of the batch inferences** (``inference.json``, ``landmark_inference.json``): a run writes into its
``output_dir``, and a folder that already holds the results of an earlier run (its summary file, or a per-image
folder with a report) is refused at the start, before anything is loaded or written::

    out: holds the results of an earlier run (inference_summary.json, 12 image folders); a rerun does not replace
    them: choose another --output_dir, or pass --overwrite true to replace them

With ``--overwrite true`` the earlier run's results are removed first (its summary, and in each image folder the
files the writer makes, then the folder when nothing else is left in it), so the new summary and the folders beside
it are this run's only; files the bundle did not write are left alone, and nothing outside ``output_dir`` is
touched (a linked folder is not followed). Other contents (``landmarks/`` of a landmark run, your own files) do not
make a folder "used". The same run also checks that it can create and write files in ``output_dir``.

**Shipped weights are not replaced by a training** (``train.json``, ``landmark_train.json``): a training whose
``ckpt_dir`` is the bundle's own ``models/`` folder, where a weights file it would write is the one the bundle ships
(listed in ``large_files.yml`` beside that folder, with the same sha256), stops before anything is written, unless
``--replace_shipped true``. A file already replaced (another hash) is the user's own and is trained on as usual.

These errors are :class:`StopRun`, a ``SystemExit``: ``python -m monai.bundle run`` prints its one-line message and
exits with status 1, as a command-line tool stops on a usage error.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "StopRun",
    "earlier_run",
    "prepare_output_dir",
    "protect_shipped_weights",
    "require_checkpoints",
    "require_weights",
]

logger = logging.getLogger(__name__)


class StopRun(SystemExit):
    """A run that must not start. Its message (one line, naming the file or folder and what to do) is all the user
    sees: exit status 1, no traceback."""


def earlier_run(output_dir: str | os.PathLike, summary_file: str, report_file: str) -> tuple[bool, list[Path]]:
    """What an earlier run left in ``output_dir``: (whether its summary is there, its image folders).

    An image folder is a real sub-folder (not a link) holding ``report_file``.
    """
    out = Path(output_dir)
    if not out.is_dir():
        return False, []
    folders = sorted(p for p in out.iterdir() if p.is_dir() and not p.is_symlink() and (p / report_file).is_file())
    return (out / summary_file).is_file(), folders


def prepare_output_dir(
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    summary_file: str = "inference_summary.json",
    report_file: str = "report.json",
    result_files: Sequence[str] = ("heatmap.nii.gz", "overlay.png"),
) -> str:
    """Apply the rerun policy (module docstring) to ``output_dir``, create it and check that files can be written.

    Args:
        output_dir: the run's output folder.
        overwrite: replace an earlier run's results instead of refusing the folder.
        summary_file: the run's summary, in ``output_dir``.
        report_file: each image's report, in its folder.
        result_files: the other files the writer puts in an image folder.

    Returns:
        ``output_dir`` as a string (for a config's ``run`` list).

    Raises:
        StopRun: the folder holds an earlier run's results and ``overwrite`` is false, or it cannot be written.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise StopRun(f"{out}: the output_dir is a file, expected a folder (or a path that does not exist yet).")
    has_summary, folders = earlier_run(out, summary_file, report_file)
    if has_summary or folders:
        found = ", ".join(
            ([summary_file] if has_summary else []) + ([f"{len(folders)} image folders"] if folders else [])
        )
        if not overwrite:
            raise StopRun(
                f"{out}: holds the results of an earlier run ({found}); a rerun does not replace them: choose another "
                "--output_dir, or pass --overwrite true to replace them."
            )
        for folder in folders:
            for name in (report_file, *result_files):
                (folder / name).unlink(missing_ok=True)
            if not any(folder.iterdir()):
                folder.rmdir()
        (out / summary_file).unlink(missing_ok=True)
        logger.warning(f"{out}: overwrite: removed the results of an earlier run ({found}).")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write_check_"):
            pass
    except OSError as error:
        raise StopRun(
            f"{out}: the output_dir cannot be written ({error.strerror or error}); choose a folder this user can "
            "write (--output_dir)."
        ) from None
    return str(out)


def require_weights(path: str | os.PathLike) -> str:
    """Check that ``path`` is a readable PyTorch weights file before a run builds on it; returns the path.

    Raises:
        StopRun: the file is missing, truncated, or not a weights-only checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise StopRun(f"{path}: no such weights file; train the model first (configs/train.json) or set --ckpt_dir.")
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated: Errno 22 / EOF; a pickle that is not only weights: UnpicklingError
        first_line = (str(error).splitlines() or [""])[0][:200]
        raise StopRun(
            f"{path}: cannot be read as PyTorch weights ({type(error).__name__}: {first_line}); expected the state "
            "dict a training wrote (a truncated or corrupt file? copy it again)."
        ) from None
    return str(path)


def require_checkpoints(handlers) -> list[str]:
    """:func:`require_weights` for every handler that will load a file at the start of a run (MONAI's
    ``CheckpointLoader``: its ``load_path``), so that a bad weights file stops the run before the network is built or
    anything is written; returns the checked paths.

    Args:
        handlers: the engine's handlers (a config's ``handlers`` list); those without ``load_path`` are skipped.
    """
    return [require_weights(h.load_path) for h in handlers if isinstance(getattr(h, "load_path", None), (str, Path))]


def _sha256(path: Path) -> str:
    # not monai.apps.utils.check_hash: it logs an ERROR on a mismatch, and here a mismatch is the normal case of a
    # user's own weights in models/ (tools/large_files.py, outside the bundle, cannot be imported by it)
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def protect_shipped_weights(
    ckpt_dir: str | os.PathLike, names: Sequence[str], replace_shipped: bool = False
) -> list[str]:
    """Stop a training that would overwrite the weights the bundle ships (module docstring); returns the shipped
    files it would replace (empty when none, or when ``replace_shipped``).

    Args:
        ckpt_dir: where the training writes its weights.
        names: the files it writes there (e.g. ``["model.pt"]``).
        replace_shipped: replace them anyway.

    Raises:
        StopRun: a file in ``names`` is in ``ckpt_dir`` as the bundle ships it.
    """
    import yaml

    models = Path(ckpt_dir).resolve()
    listing = models.parent / "large_files.yml"
    if not listing.is_file():
        return []
    entries = (yaml.safe_load(listing.read_text()) or {}).get("large_files") or []
    shipped = []
    for entry in entries:
        path = (listing.parent / entry["path"]).resolve()
        if path.parent == models and path.name in names and path.is_file() and _sha256(path) == entry["hash_val"]:
            shipped.append(str(path))
    if shipped and not replace_shipped:
        raise StopRun(
            f"{', '.join(shipped)}: the weights this bundle ships ({listing.name}); this training would replace them. "
            "Train into another folder (--bundle_root DIR or --ckpt_dir DIR), or pass --replace_shipped true."
        )
    return shipped
