"""Offline tools on the gate's own pipeline: ``detect``, ``score``, ``bench`` and ``crop-faces``."""
