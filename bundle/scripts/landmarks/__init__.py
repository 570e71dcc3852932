"""The 16-landmark detector: letterboxed whole-image heatmaps, patch refinement and a statistical shape model."""
