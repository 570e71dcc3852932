"""The bundle's own code (network, losses, metrics, handlers, landmark detector), imported from configs as ``scripts.*``."""
