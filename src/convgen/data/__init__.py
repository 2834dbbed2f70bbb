"""Datasets, readers, downloads, transforms and batching (no torchvision)."""
