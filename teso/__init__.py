"""teso: text-guided audio-visual segmentation (TeSO, ECCV 2024).

Folders, one job each: ``audio`` and ``video`` (decoding, log-mel, VGGish, perturbations), ``data``
(AVSBench readers, the SynthAVS generator, the data checker), ``model`` (TeSO built from its parts),
``cues`` (captioners, reasoners, the cue store, text encoders), ``engine`` (training, evaluation,
prediction), ``metrics`` and ``cli``.
"""

__version__ = "0.1.0"
