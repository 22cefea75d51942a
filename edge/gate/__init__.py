"""The device pipeline: source -> detector -> classifier -> tracker -> decision -> outputs.

``config`` is the one validated configuration tree; ``service`` runs the loop
under systemd. Everything here runs on the Pi, on LiteRT, without TensorFlow.
"""
