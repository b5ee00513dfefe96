"""Reproducible FER2013 facial-expression classification pipeline (DVC + PyTorch)."""
