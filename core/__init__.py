"""What every layer shares: errors, hashing, atomic I/O, the registry, modality names and labels.

``msa.core`` imports nothing else of msa; ``msa.extractors`` and ``msa.models`` import only this
(and each other where a model really uses a layer); ``msa.pipeline`` sits on top of all three.
"""
