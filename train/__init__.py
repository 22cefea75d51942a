"""Training stage: fine-tune an ImageNet MobileNetV2 on face crops, or a U-Net on scenes.

The classifier's modules are here (``run`` is ``maskgate train``); the U-Net's
are in ``segmentation``. Both fit through ``fitting`` and write their run
directories through ``rundir``. Modules that need TensorFlow import it inside
functions or are imported only by the training commands, so that listing
options or scanning a dataset stays fast and works without it.
"""

import os

# TensorFlow reads this once, when its C++ library loads; set before any module here imports it,
# so a user sees our messages rather than TensorFlow's start-up chatter. A user's own value wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
