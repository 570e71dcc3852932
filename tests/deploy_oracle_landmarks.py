"""Stand-in landmark network for the MONAI Deploy app's tests (copied into a test bundle's ``scripts/``).

It knows the test's pelvic radiograph: for an input equal to the stored letterboxed image it returns the
stored heatmap logits (whose spatial softmax, the detector's activation, is a Gaussian at each true landmark);
for any other image flat logits, so the detector's own plausibility check refuses it. Everything after the
network (decoding, shape prior, plausibility, preprocessing, AASN, back-projection) is the bundle's real code.
"""

from __future__ import annotations

import torch


class OracleHeatmaps(torch.nn.Module):
    """Heatmap logits of known images (``inputs``: ``(K, 1, H, W)``, ``heatmaps``: ``(K, N, H, W)``), else zeros.

    Args:
        num_images: known images.
        num_landmarks: heatmap channels.
        spatial_size: ``(H, W)`` of the detector input.
        tolerance: largest mean squared difference for an input to count as a known image.
    """

    def __init__(self, num_images: int = 1, num_landmarks: int = 16, spatial_size=(96, 96), tolerance: float = 1e-5):
        super().__init__()
        self.register_buffer("inputs", torch.zeros(num_images, 1, *spatial_size))
        self.register_buffer("heatmaps", torch.zeros(num_images, num_landmarks, *spatial_size))
        self.tolerance = tolerance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distance = ((x[:, None] - self.inputs[None]) ** 2).mean(dim=(2, 3, 4))  # (B, K)
        best = distance.min(dim=1)
        known = (best.values <= self.tolerance).to(x.dtype)[:, None, None, None]
        return self.heatmaps[best.indices] * known
