"""The model zoo's bundle checks (Project-MONAI/model-zoo ``ci/verify_bundle.py``), run on this bundle.

``python tools/verify_bundle.py [--bundle bundle] [--mode full|min] [--allow-missing-weights]``
(``make verify-bundle``) runs, in the zoo's order and with its rules:

1. ``download_large_files``: MONAI's, when the bundle has a ``large_files.yml`` (every listed file present with
   its sha256, or downloaded);
2. ``verify_bundle_directory``: the necessary files ``configs/metadata.json`` and ``LICENSE``; the preferred files
   ``models/model.pt`` and ``configs/inference.{json,yaml,yml}``. No weights are shipped yet, so
   ``--allow-missing-weights`` does for ``models/model.pt`` what the zoo's ``exclude_verify_preferred_files_list``
   does for a bundle listed there;
3. ``verify_version_changes``: ``version`` and ``changelog`` present, the version in the changelog (the zoo's
   comparison with its own ``model_info.json`` has nothing to compare with here);
4. ``verify_metadata_format``: the zoo validates ``metadata.json`` against the JSON schema named by its ``schema``
   URL, which cannot be downloaded here (no network beyond package registries). With ``--schema FILE`` (a local copy
   of that schema) MONAI's ``verify_metadata`` runs on it; without, the keys that the MONAI Bundle Specification
   makes mandatory and every tensor format's keys are checked;

and in ``full`` mode (the zoo's default; it runs them on a GPU, they run on the CPU here):

5. ``verify_bundle_properties``: MONAI's inference workflow properties of ``configs/inference.json``
   (``create_workflow(...).check_properties()``; the zoo adds per-app property files that live in its repository);
6. ``verify_data_shape``: ``verify_net_in_out`` of ``network_def`` in ``configs/inference.json`` with
   ``network_data_format``, and, beyond the zoo, of every other network that ``metadata.json``'s ``network_configs``
   names with its own data format (the landmark detector's two networks);
7. ``verify_torchscript``: ``ckpt_export`` of ``network_def`` from ``models/model.pt`` (with
   ``--allow-missing-weights`` and no ``model.pt``: from the zoo's fake weights, the network's initial state dict),
   written to a temporary folder instead of the bundle's ``models/``; a provided ``models/model.ts`` must load.

Like the zoo, the bundle folder is put first on ``sys.path`` (its ``scripts`` import from there). Exit code 0 when
every check passes; otherwise the failing check's error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"

NECESSARY_FILES = ("configs/metadata.json", "LICENSE")
PREFERRED_FILES = ("models/model.pt", "configs/inference.json")
#: keys the MONAI Bundle Specification makes mandatory in metadata.json (the zoo's newer schemas name the package
#: versions required_packages_version; the specification's optional_packages_version is accepted as well)
MANDATORY_METADATA_KEYS = (
    "version", "monai_version", "pytorch_version", "numpy_version", "task", "description", "authors", "copyright",
    "network_data_format",
)  # fmt: skip
#: keys of every tensor format (the specification's "modality" has a default, "n/a", and the zoo's bundles leave it
#: out of their outputs)
TENSOR_FORMAT_KEYS = (
    "type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data", "channel_def",
)  # fmt: skip


class BundleCheckError(ValueError):
    """A check of the model zoo failed; the message names the check, the file and the field."""


def _find_bundle_file(folder: Path, stem: str, suffixes=("json", "yaml", "yml")) -> str | None:
    found = None
    for suffix in suffixes:
        if (folder / f"{stem}.{suffix}").is_file():
            found = f"{stem}.{suffix}"
    return found


def _metadata(bundle: Path) -> dict:
    return json.loads((bundle / "configs" / "metadata.json").read_text())


def download_large_files(bundle: Path) -> None:
    if _find_bundle_file(bundle, "large_files") is None:
        return
    from monai.bundle import download_large_files as monai_download_large_files

    try:
        monai_download_large_files(bundle_path=str(bundle))
    except Exception as e:
        raise BundleCheckError(f"download_large_files: {bundle}/large_files.yml: {type(e).__name__}: {e}") from e


def verify_bundle_directory(bundle: Path, allow_missing_weights: bool = False) -> list[str]:
    """The zoo's required and preferred files; returns the preferred files excused by ``allow_missing_weights``."""
    for file in NECESSARY_FILES:
        if not (bundle / file).is_file():
            raise BundleCheckError(f"verify_bundle_directory: necessary file {file} is not existing in {bundle}.")
    excused = []
    for file in PREFERRED_FILES:
        if file == "configs/inference.json":
            if _find_bundle_file(bundle / "configs", "inference") is None:
                raise BundleCheckError(f"verify_bundle_directory: inference config file is not existing in {bundle}.")
        elif not (bundle / file).is_file():
            if allow_missing_weights and file.startswith("models/"):
                excused.append(file)
                continue
            raise BundleCheckError(
                f"verify_bundle_directory: necessary file {file} is not existing in {bundle} (no weights shipped: "
                "pass --allow-missing-weights, as the zoo's exclude list does)."
            )
    return excused


def verify_version_changes(bundle: Path) -> None:
    metadata = _metadata(bundle)
    for key in ("version", "changelog"):
        if key not in metadata:
            raise BundleCheckError(f"verify_version_changes: '{key}' is missing in {bundle}/configs/metadata.json.")
    if metadata["version"] not in metadata["changelog"]:
        raise BundleCheckError(
            f"verify_version_changes: version number {metadata['version']} is missing in 'changelog' in "
            f"{bundle}/configs/metadata.json."
        )


def _check_tensor_format(where: str, spec: object) -> None:
    if not isinstance(spec, dict):
        raise BundleCheckError(f"verify_metadata_format: {where}: expected a tensor format object, got {spec!r}.")
    missing = [k for k in TENSOR_FORMAT_KEYS if k not in spec]
    if missing:
        raise BundleCheckError(f"verify_metadata_format: {where}: missing keys {missing}.")
    if not isinstance(spec["num_channels"], int) or spec["num_channels"] < 1:
        raise BundleCheckError(f"verify_metadata_format: {where}.num_channels: expected a positive integer.")
    if not isinstance(spec["spatial_shape"], list) or not spec["spatial_shape"]:
        raise BundleCheckError(f"verify_metadata_format: {where}.spatial_shape: expected a non-empty list.")


def verify_metadata_format(bundle: Path, schema: Path | None = None) -> None:
    meta_file = bundle / "configs" / "metadata.json"
    if schema is not None:
        from monai.bundle import verify_metadata

        # download_url skips the download when the file is there: verify_metadata validates against the local copy
        try:
            verify_metadata(meta_file=str(meta_file), filepath=str(schema))
        except Exception as e:
            raise BundleCheckError(f"verify_metadata_format: {meta_file}: {e}") from e
        return
    metadata = _metadata(bundle)
    missing = [k for k in MANDATORY_METADATA_KEYS if k not in metadata]
    if not any(k in metadata for k in ("required_packages_version", "optional_packages_version")):
        missing.append("required_packages_version")
    if missing:
        raise BundleCheckError(f"verify_metadata_format: {meta_file}: missing mandatory keys {missing}.")
    if not isinstance(metadata.get("eval_metrics", {}), dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in metadata.get("eval_metrics", {}).values()
    ):
        raise BundleCheckError(f"verify_metadata_format: {meta_file}: eval_metrics: expected numbers by name.")
    for key in _data_format_keys(metadata):
        formats = metadata[key]
        for side, name in (("inputs", "image"), ("outputs", "pred")):
            if name not in formats.get(side, {}):
                raise BundleCheckError(f"verify_metadata_format: {meta_file}: {key}.{side}.{name} is missing.")
            for tensor, spec in formats[side].items():
                _check_tensor_format(f"{meta_file}: {key}.{side}.{tensor}", spec)


def _data_format_keys(metadata: dict) -> list[str]:
    return ["network_data_format", *(k for k in metadata.get("network_configs", {}) if k != "network_data_format")]


def verify_bundle_properties(bundle: Path) -> None:
    from monai.bundle import create_workflow

    config_name = _find_bundle_file(bundle / "configs", "inference")
    workflow = create_workflow(
        workflow_type="inference", bundle_root=str(bundle), config_file=str(bundle / "configs" / config_name),
        logging_file=str(bundle / "configs" / "logging.conf"), meta_file=str(bundle / "configs" / "metadata.json"),
    )  # fmt: skip
    try:
        problems = workflow.check_properties()
    finally:
        workflow.finalize()
    if problems:
        raise BundleCheckError(f"verify_bundle_properties: configs/{config_name}: properties not met: {problems}.")


def network_checks(bundle: Path) -> list[tuple[str, str, str]]:
    """``(data format key, config file, net id)`` of every network whose input and output shapes are checked."""
    metadata = _metadata(bundle)
    inference = f"configs/{_find_bundle_file(bundle / 'configs', 'inference')}"
    checks = [("network_data_format", inference, "network_def")]
    for key, where in metadata.get("network_configs", {}).items():
        if key == "network_data_format":
            continue
        if key not in metadata:
            raise BundleCheckError(f"verify_data_shape: metadata.json: network_configs names {key!r}, not in metadata.")
        checks.append((key, where["config_file"], where["net_id"]))
    return checks


def verify_data_shape(bundle: Path) -> list[str]:
    from monai.bundle import verify_net_in_out

    metadata = _metadata(bundle)
    verified = []
    for key, config_file, net_id in network_checks(bundle):
        override = {} if key == "network_data_format" else {"_meta_#network_data_format": metadata[key]}
        try:
            verify_net_in_out(
                net_id=net_id, meta_file=str(bundle / "configs" / "metadata.json"),
                config_file=str(bundle / config_file), bundle_root=str(bundle), device="cpu", **override,
            )  # fmt: skip
        except Exception as e:
            raise BundleCheckError(f"verify_data_shape: {config_file} {net_id} against {key}: {e}") from e
        verified.append(f"{config_file}#{net_id} ({key})")
    return verified


def verify_torchscript(bundle: Path, allow_missing_weights: bool = False) -> str:
    import torch
    from monai.bundle import ckpt_export
    from monai.bundle.config_parser import ConfigParser

    config_file = bundle / "configs" / _find_bundle_file(bundle / "configs", "inference")
    meta_file = bundle / "configs" / "metadata.json"
    with tempfile.TemporaryDirectory(prefix="verify-bundle-") as scratch:
        weights = bundle / "models" / "model.pt"
        source = "models/model.pt"
        if not weights.is_file():
            if not allow_missing_weights:
                raise BundleCheckError(f"verify_torchscript: {weights} is missing.")
            # the zoo's _produce_fake_weights: the network's initial state dict
            parser = ConfigParser()
            parser.read_config(f=str(config_file))
            parser.read_meta(f=str(meta_file))
            parser["bundle_root"] = str(bundle)
            weights = Path(scratch) / "model.pt"
            torch.save(parser.get_parsed_content("network_def").state_dict(), weights)
            source = "fake weights (the network's initial state)"
        try:
            ckpt_export(
                net_id="network_def", filepath=str(Path(scratch) / "verify_model.ts"), ckpt_file=str(weights),
                meta_file=str(meta_file), config_file=str(config_file), bundle_root=str(bundle),
            )  # fmt: skip
        except Exception as e:
            raise BundleCheckError(f"verify_torchscript: ckpt_export of network_def from {source}: {e}") from e
    provided = bundle / "models" / "model.ts"
    if provided.is_file():
        torch.jit.load(str(provided))
    return source


def verify(bundle: Path = BUNDLE, mode: str = "full", allow_missing_weights: bool = False,
           schema: Path | None = None, log=print) -> None:  # fmt: skip
    """Run the checks; raises :class:`BundleCheckError` at the first failing one."""
    bundle = Path(bundle).resolve()
    if mode not in ("full", "min"):
        raise ValueError(f"mode: expected 'full' or 'min', got {mode!r}.")
    sys.path.insert(0, str(bundle))  # as the zoo's verify(): the bundle's own code imports from there
    download_large_files(bundle)
    log("large files are verified correctly.")
    excused = verify_bundle_directory(bundle, allow_missing_weights)
    excuse = f" (no weights shipped: {', '.join(excused)} excused)" if excused else ""
    log("directory is verified correctly." + excuse)
    verify_version_changes(bundle)
    log("version and changelog are verified correctly.")
    verify_metadata_format(bundle, schema)
    offline = " (mandatory keys; the zoo's schema is offline)."
    log("metadata format is verified correctly" + ("." if schema else offline))
    if mode == "min":
        return
    verify_bundle_properties(bundle)
    log("properties are verified correctly.")
    for checked in verify_data_shape(bundle):
        log(f"data shape is verified correctly: {checked}.")
    source = verify_torchscript(bundle, allow_missing_weights)
    log(f"export weights into TorchScript module successfully ({source}).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The model zoo's checks of a MONAI bundle (see the module's doc).")
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="the bundle folder (default: bundle/)")
    parser.add_argument("--mode", choices=("full", "min"), default="full")
    parser.add_argument(
        "--allow-missing-weights",
        action="store_true",
        help="models/model.pt may be absent (no weights shipped); TorchScript from fake weights",
    )
    parser.add_argument("--schema", type=Path, help="a local copy of the metadata schema named by metadata.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    try:
        verify(args.bundle, args.mode, args.allow_missing_weights, args.schema)
    except BundleCheckError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(f"{args.bundle}: every check of the model zoo's verify_bundle passed ({args.mode} mode).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
