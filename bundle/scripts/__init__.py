"""The bundle's own code, imported from the configs as ``scripts.*`` (``bundle/`` is the import root).

* ``scripts.fracture``: the AASN fracture model: networks and baselines, losses, image score, training batches.
* ``scripts.landmarks``: the 16-landmark detector: letterbox, heatmaps, shape model, refinement, its training,
  evaluation and batch inference.
* ``scripts.reporting``: what evaluation and inference write: fracture metrics, pictures, reports, failures.
* shared workflow modules at this level: ``datalist`` (datalists and folds), ``checkpoint`` (atomic, resumable
  checkpoints), ``failure_tolerant_dataset`` (batch inference, training and validation that survive a sample that
  cannot be made), ``screen_datalist`` (``python -m scripts.screen_datalist``: the images the preprocessing refuses,
  before training), ``run_guard`` (what a batch run checks before it starts: the rerun policy of its ``output_dir``,
  its weights file; ``StopRun``, one line and exit status 1), ``augmentation`` (training augmentation of both
  models), ``demo`` (the ``make demo`` command).

Pixel geometry and file conventions (loading, landmarks, ROIs, point transforms, file names) are not here: they
live in ``custom_transforms``, the project's installed package (``aasn-pelvic-fracture``). A bundle copied without it
stops here, saying so, instead of later with MONAI's "module 'scripts' has no attribute ..." (its config ``$import``
lines swallow import errors).
"""

try:
    import custom_transforms  # noqa: F401
except ModuleNotFoundError as missing:
    if missing.name != "custom_transforms":  # installed, but one of its own dependencies is missing: say that
        raise
    raise ModuleNotFoundError(
        "The bundle's code (scripts) needs the project's package `custom_transforms`, which is not installed in this "
        "Python environment. Install the project's wheel beside the bundle "
        "(pip install aasn_pelvic_fracture-<version>-py3-none-any.whl, made by `make wheel`) or the project itself "
        "(pip install <repository>); see the bundle's docs/README.md.",
        name="custom_transforms",
    ) from missing
