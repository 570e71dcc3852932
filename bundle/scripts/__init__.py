"""The bundle's own code, imported from the configs as ``scripts.*`` (``bundle/`` is the import root).

* ``scripts.fracture``: the AASN fracture model: networks and baselines, losses, image score, training batches.
* ``scripts.landmarks``: the 16-landmark detector: letterbox, heatmaps, shape model, refinement, its training,
  evaluation and batch inference.
* ``scripts.reporting``: what evaluation and inference write: fracture metrics, pictures, reports, failures.
* shared workflow modules at this level: ``datalist`` (datalists and folds), ``checkpoint`` (atomic, resumable
  checkpoints), ``failure_tolerant_dataset`` (batch inference, training and validation that survive a sample that
  cannot be made), ``screen_datalist`` (``python -m scripts.screen_datalist``: the images the preprocessing refuses,
  before training), ``augmentation`` (training augmentation of both models), ``demo`` (the ``make demo`` command).

Pixel geometry and file conventions (loading, landmarks, ROIs, point transforms, file names) are not here: they
live in ``custom_transforms``.
"""
