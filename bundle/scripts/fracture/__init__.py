"""The AASN fracture model: networks of the paper's Tables 1-2, losses, image score and training batches."""
