"""Face detectors: one base class (``base``), backends by name (``config.BACKENDS``,
``registry.make_detector``), the SSD backends with their decoding, and the U-Net backend."""
