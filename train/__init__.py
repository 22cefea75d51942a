"""Training stage: fine-tune an ImageNet MobileNetV2 on face crops.

Modules that need TensorFlow import it inside functions or are imported only
by the training command, so that listing options or scanning a dataset stays
fast and works without it.
"""
