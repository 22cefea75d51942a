"""The shared room: pieces every stage uses and that depend on nothing else of maskgate.

Errors, the settings base, atomic writes, image reading, box geometry, the one
preprocessing definition, bundles with typed metadata, the LiteRT interpreter,
the fetch step, VOC annotations, split manifests, timing, progress and machine facts.
Never imports TensorFlow, nor any other room.
"""
