"""Tiny AASN weights for tests that run the bundle's inference: seeded, and away from the zero-initialised head."""

from __future__ import annotations

from pathlib import Path

import torch


def save_random_aasn(path: str | Path, network_kwargs: dict, seed: int = 0) -> Path:
    """Write the state dict of a tiny ``aasn`` network with seeded random weights to ``path``.

    The head is initialised at zero (every probability 0.5); the perturbation makes the probabilities vary over
    the image, so that tests comparing two inferences compare something.
    """
    from scripts.fracture.networks import build_network

    torch.manual_seed(seed)
    network = build_network("aasn", **network_kwargs)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    path = Path(path)
    torch.save(network.state_dict(), path)
    return path
