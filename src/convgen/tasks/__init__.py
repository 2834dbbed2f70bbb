"""Training tasks, one file per model family: what one step computes, how it is validated, what is exported.

Importing this package registers the tasks (the registry imports it by name on the first lookup).
"""

from convgen.tasks import classification, codec, diffusion, gan, restoration, style, vae  # noqa: F401  (registers the tasks)
