"""Face segmentation: a U-Net trained on VOC scenes (``maskgate train-unet``).

A subpackage of its own, one module per concern as the classifier's are:
``config`` (the options; imports no TensorFlow, so building the command line
stays fast), ``scenes`` (VOC scenes to masks, their split and its manifest,
also read by conversion), ``model`` (the U-Net, its loss and augmentation),
``metrics`` (pixel metrics in numpy, shared with conversion), ``report`` and
``run`` (the training run). Fitting and the run directory's common files go
through the spine the classifier uses (``maskgate.train.fitting``,
``maskgate.train.rundir``).
"""
