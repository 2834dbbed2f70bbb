"""Entropy models and coding for the learned codec: the factorized entropy bottleneck and the Gaussian conditional
(:mod:`.models`), integer coding tables built once at export (:mod:`.tables`), the integer hyper-synthesis that
makes the decoder's table choice exact on any machine (:mod:`.integer`), the range coder binding
(:mod:`.coder`) and the file format (:mod:`.bitstream`)."""
