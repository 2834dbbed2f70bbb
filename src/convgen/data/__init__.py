"""Datasets, readers, downloads, transforms, batching and degradations (no torchvision).

Importing this package registers its datasets (the registry imports it by name on the first lookup).
"""

from convgen.data import datasets, patches  # noqa: F401  (registers the datasets)
