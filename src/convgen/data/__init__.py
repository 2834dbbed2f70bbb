"""Datasets, readers, downloads, transforms, batching and degradations (no torchvision).

The registry imports every module of this package on its first lookup (``registry.import_package``), so a
module registers by being here.
"""

