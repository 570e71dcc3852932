"""Operators of the AASN MONAI Deploy app, one per module."""
