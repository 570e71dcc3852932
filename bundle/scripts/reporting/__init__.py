"""What evaluation and inference write: fracture metrics, curves and pictures, per-image reports and failures."""
