"""SynthAVS: the paper's question in miniature, in one package.

- ``generator/``: the procedural dataset (scenes, sounds, drawing, captions, the AVSBench-layout writer);
- ``foundations.py``: pre-training the small visual and audio foundations on it (the roles ADE20K and
  YouTube-8M play in the paper);
- ``demo.py``: the demo's protocol (data, foundations, cues, models, audio conditions) and its report;
- ``fingerprint.py``: the numerics fingerprint, a tiny pinned demo reduced to hashes.

The library's training, evaluation and prediction (``teso.engine``) know nothing of SynthAVS: a
SynthAVS tree is an AVSBench tree with extra truth files.
"""
