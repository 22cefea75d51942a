"""Conversion stage: int8 TFLite models and verified bundles (see the conversion issue)."""
