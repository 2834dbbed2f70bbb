"""Training losses: pixel losses for restoration (``pixel``) and adversarial losses and penalties for GANs
(``adversarial``). Each is registered in ``LOSSES`` under the name a task config uses.

Importing this package registers them (the registry imports it by name on the first lookup).
"""

from convgen.losses import adversarial, pixel  # noqa: F401  (registers the losses)
