"""The bundle as one zip, and the project's wheel: what a user needs besides packages from PyPI.

``python tools/bundle_archive.py`` (``make bundle-archive``) writes ``dist/aasn_pelvic_fracture_v<version>.zip``: the
bundle folder under one top-level folder named after the bundle (the model zoo's and MONAI's archive layout:
``aasn_pelvic_fracture/configs/metadata.json``, ...), holding ``LICENSE``, ``large_files.yml``, ``configs/``, the
bundle's code ``scripts/`` (Python files only), ``docs/`` and ``models/`` with the files ``large_files.yml`` lists
that are present. Nothing generated (outputs, data, caches, ``__pycache__``) goes in.

``python tools/bundle_archive.py --wheel`` (``make wheel``) builds the project's wheel (``custom_transforms``,
``simulation``) into ``dist/`` from a staged copy of the few files the build reads, so that the source tree gets no
``build/`` folder. The bundle's ``scripts`` import ``custom_transforms`` from that wheel; with the wheel and the
packages of ``pyproject.toml`` installed, the unpacked archive runs (``tests/test_bundle_archive.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
#: the archive's top-level folder, the bundle's name in the model zoo's style
BUNDLE_NAME = "aasn_pelvic_fracture"
#: folders and suffixes of the bundle that go into the archive (``models/`` separately, from ``large_files.yml``)
_INCLUDED = {"configs": (".json", ".yaml", ".yml", ".conf"), "scripts": (".py",), "docs": None}
_TOP_FILES = ("LICENSE", "large_files.yml")
#: what the wheel build reads (pyproject.toml's packages, licence files and the version's source)
_WHEEL_SOURCES = ("pyproject.toml", "LICENSE", "custom_transforms", "simulation", "bundle/configs/metadata.json")
#: a fixed time stamp for every archive entry, so that the same files give the same zip
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def bundle_version(bundle_dir: Path = BUNDLE) -> str:
    """The bundle's ``configs/metadata.json`` version."""
    return json.loads((Path(bundle_dir) / "configs" / "metadata.json").read_text())["version"]


def _large_file_paths(bundle_dir: Path) -> list[str]:
    path = bundle_dir / "large_files.yml"
    if not path.is_file():
        return []
    import yaml

    entries = (yaml.safe_load(path.read_text()) or {}).get("large_files") or []
    return [entry["path"] for entry in entries]


def bundle_files(bundle_dir: Path = BUNDLE) -> list[str]:
    """The bundle's files that the archive holds, as paths relative to ``bundle_dir`` (sorted).

    Raises:
        FileNotFoundError: a top-level file (``LICENSE``, ``large_files.yml``) or ``configs/metadata.json`` is missing.
    """
    bundle_dir = Path(bundle_dir)
    for required in (*_TOP_FILES, "configs/metadata.json"):
        if not (bundle_dir / required).is_file():
            raise FileNotFoundError(f"{bundle_dir / required}: missing; the bundle archive needs it.")
    files = set(_TOP_FILES)
    for folder, suffixes in _INCLUDED.items():
        for path in (bundle_dir / folder).rglob("*"):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            if suffixes is None or path.suffix in suffixes:
                files.add(path.relative_to(bundle_dir).as_posix())
    files.update(p for p in _large_file_paths(bundle_dir) if (bundle_dir / p).is_file())
    return sorted(files)


def build_archive(bundle_dir: Path = BUNDLE, out_dir: Path = REPO / "dist", name: str = BUNDLE_NAME) -> Path:
    """Write ``<out_dir>/<name>_v<version>.zip`` and return its path (``models/`` is always there, maybe empty)."""
    bundle_dir = Path(bundle_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}_v{bundle_version(bundle_dir)}.zip"
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        folder = zipfile.ZipInfo(f"{name}/models/", date_time=_ZIP_TIME)
        folder.external_attr = 0o40755 << 16
        archive.writestr(folder, b"")
        for relative in bundle_files(bundle_dir):
            entry = zipfile.ZipInfo(f"{name}/{relative}", date_time=_ZIP_TIME)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, (bundle_dir / relative).read_bytes())
    return target


def stage_sources(target: Path, repo: Path = REPO) -> Path:
    """Copy what building the project's package reads (``pyproject.toml``, licences, packages, the version's source)
    to ``target``; ``pip install <target>`` is ``pip install <repo>`` without a ``build/`` folder in the tree."""
    target = Path(target)
    for relative in _WHEEL_SOURCES:
        source = Path(repo) / relative
        if source.is_dir():
            shutil.copytree(source, target / relative, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    return target


def build_wheel(out_dir: Path = REPO / "dist", repo: Path = REPO, python: str = sys.executable) -> Path:
    """Build the project's wheel into ``out_dir`` from a staged copy of the files the build reads; return its path.

    Uses ``pip wheel`` with build isolation (pyproject.toml's ``build-system``), so it needs the package index.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aasn-wheel-") as staging:
        staged = stage_sources(Path(staging) / "src", repo)
        before = set(out_dir.glob("*.whl"))
        done = subprocess.run(
            [python, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out_dir), str(staged)],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"pip wheel of {repo} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    version = bundle_version(Path(repo) / "bundle")
    wheel = out_dir / f"aasn_pelvic_fracture-{version}-py3-none-any.whl"
    if not wheel.is_file():
        raise RuntimeError(f"pip wheel wrote {sorted(set(out_dir.glob('*.whl')) - before)}, expected {wheel.name}.")
    return wheel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="the bundle folder (default: bundle/)")
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    parser.add_argument("--wheel", action="store_true", help="build the project's wheel instead of the bundle zip")
    args = parser.parse_args(argv)
    print(build_wheel(args.out) if args.wheel else build_archive(args.bundle, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
