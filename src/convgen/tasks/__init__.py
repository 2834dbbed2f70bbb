"""Training tasks, one file per model family: what one step computes, how it is validated, what is exported.

The registry imports every module of this package on its first lookup (``registry.import_package``), so a
module registers by being here.
"""

