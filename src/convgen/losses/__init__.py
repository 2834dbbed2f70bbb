"""Training losses: pixel losses for restoration (``pixel``), adversarial losses and penalties for GANs
(``adversarial``), and the likelihoods and KL of VAEs (``likelihood``). Each is registered in ``LOSSES`` under the
name a task config uses.

The registry imports every module of this package on its first lookup (``registry.import_package``), so a
module registers by being here.
"""

