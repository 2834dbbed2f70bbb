"""Pretrained feature networks in plain PyTorch, with state_dict keys that load the public weight files:
InceptionV3 for FID (``inception``). Used by metrics and perceptual losses; not registered as trainable models."""
