"""Text cues (SPEC §4): captioners, reasoners, prompts, answer parsing, the cue store, text features, REC.

Pipeline: frame --captioner--> description --reasoner--> cue words --"This is a {cue}."--> text
encoder --> ``[T, N_T, d_T]`` features per clip. ``teso cues caption|reason|encode|all|score`` drives
it (:mod:`teso.cues.runner`); the training engine reads the features with
:class:`teso.cues.features.TextFeatures`. Heavy dependencies (torch models, spaCy) load only when used.
"""

from typing import Any

from teso.cues.parse import Vocabulary, normalise_cue, parse_answer
from teso.cues.prompts import PROMPTS, get_prompt
from teso.cues.store import CueStore


def __getattr__(name: str) -> Any:
    # TextFeatures pulls in torch; commands that only talk HTTP should not pay for that import.
    if name == "TextFeatures":
        from teso.cues.features import TextFeatures

        return TextFeatures
    raise AttributeError(name)


__all__ = ["CueStore", "PROMPTS", "TextFeatures", "Vocabulary", "get_prompt", "normalise_cue", "parse_answer"]
