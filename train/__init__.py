"""Training stage: fine-tune an ImageNet MobileNetV2 on face crops.

Modules that need TensorFlow import it inside functions or are imported only
by the training command, so that listing options or scanning a dataset stays
fast and works without it.
"""

import os

# TensorFlow reads this once, when its C++ library loads; set before any module here imports it,
# so a user sees our messages rather than TensorFlow's start-up chatter. A user's own value wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
