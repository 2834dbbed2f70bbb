"""Training losses: pixel losses for restoration (``pixel``), adversarial losses and penalties for GANs
(``adversarial``), and the likelihoods and KL of VAEs (``likelihood``). Each is registered in ``LOSSES`` under the
name a task config uses.

Importing this package registers them (the registry imports it by name on the first lookup).
"""

from convgen.losses import adversarial, likelihood, pixel  # noqa: F401  (registers the losses)
