"""Pretrained feature networks in plain PyTorch, with state_dict keys that load the public weight files:
InceptionV3 for FID (``inception``) and VGG19 for style and content losses (``vgg``, with the offline fallback
``random-vgg19``). Used by metrics and perceptual losses; not registered as trainable models."""
