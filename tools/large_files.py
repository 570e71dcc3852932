"""Entries of a bundle's ``large_files.yml``: one per weight file the bundle ships, with its sha256.

``python -m monai.bundle download_large_files --bundle_path bundle`` reads that file: for each entry it checks the
file at ``path`` against ``hash_val`` (``hash_type`` sha256) when the file is there, and downloads it from ``url``
when it is not. So an entry may only name a file that a clone of the repository has (or that ``url`` really serves).

The shipped weights are committed under ``bundle/models/``; their entries are written with::

    python tools/large_files.py --url-base bundle models/landmark_model.pt models/landmark_refine_model.pt ...

The URL of each file is ``<url-base>/<path>``: with ``--url-base bundle`` it is the file's path in this repository,
which a clone holds, so ``download_large_files`` only checks the hash (it downloads nothing for a file that is there).
A published copy of the bundle passes the address it is served from instead.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import yaml

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"

_HEADER = """\
# Large files of the bundle, for `python -m monai.bundle download_large_files --bundle_path <bundle>`: one entry per
# weight file the bundle ships, with its sha256 (an existing file is checked against it, a missing one downloaded from
# url; here url is the file's path in this repository, which a clone holds). Written by tools/large_files.py (see
# there); tests/test_large_files.py keeps it equal to the files committed under models/.
"""


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def large_file_entry(bundle_dir: str | Path, relative_path: str, url: str) -> dict:
    """The ``large_files.yml`` entry of ``bundle_dir/relative_path``: path, url, sha256.

    Raises:
        FileNotFoundError: the file is not in the bundle.
        ValueError: ``url`` is empty (``download_large_files`` would fail with "unknown url type").
    """
    path = Path(bundle_dir) / relative_path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file in the bundle; large_files.yml may only list shipped files.")
    if not url:
        raise ValueError(f"{relative_path}: an empty url; give the address the file is published at.")
    return {"path": relative_path, "url": url, "hash_val": sha256_of(path), "hash_type": "sha256"}


def write_large_files(bundle_dir: str | Path, entries: list[dict]) -> Path:
    """Write ``bundle_dir/large_files.yml`` with ``entries`` (an empty list when nothing is shipped)."""
    target = Path(bundle_dir) / "large_files.yml"
    body = yaml.safe_dump({"large_files": list(entries)}, sort_keys=False, default_flow_style=False)
    target.write_text(_HEADER + body)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a bundle's large_files.yml (sha256 of each shipped file).")
    parser.add_argument("files", nargs="*", help="paths in the bundle (e.g. models/model.pt); none: an empty list")
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="the bundle folder (default: bundle/)")
    parser.add_argument("--url-base", default="", help="the files' URL is <url-base>/<path>")
    args = parser.parse_args(argv)
    if args.files and not args.url_base:
        parser.error("--url-base is needed when files are listed")
    entries = [large_file_entry(args.bundle, f, f"{args.url_base.rstrip('/')}/{f}") for f in args.files]
    print(write_large_files(args.bundle, entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
