"""Face segmentation: a U-Net trained on VOC scenes (``maskgate train-unet``).

A subpackage of its own so the classifier's modules and the segmenter's do
not share one flat namespace of prefixes. ``config`` imports no TensorFlow,
so building the command line stays fast.
"""
