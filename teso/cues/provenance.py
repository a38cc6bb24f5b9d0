"""Cue provenance: what made the cues a model reads, recorded in its checkpoint and checked at use.

A store's provenance (:func:`cue_provenance`) is read from what the store itself records: the
``provenance`` of every caption and reasoning record (captioner / reasoner, backend, model, prompt
name, version and hash, vocabulary, source) and the feature index (text encoder, its model, the hash
of its weights, N_T, sentence template)::

    {"version": 1, "store": "reasoned",
     "captioners": [{"captioner", "backend", "model", "prompt", "prompt_version", "prompt_sha"}, ...],
     "reasoners":  [{"reasoner", "backend", "model", "prompt", "prompt_version", "prompt_sha",
                     "vocabulary", "source"}, ...],
     "text_encoder": {"encoder", "model", "weights_sha", "dim", "n_t", "template"}}

Lists hold each distinct configuration once (a store re-run with another prompt holds two).
Captioners are listed only for reasoners that read captions. :func:`compare_provenance` says how
two differ; :func:`check_cue_provenance` is what ``teso eval`` / ``teso predict`` call.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from teso.cues.store import CueStore
from teso.errors import TesoError

PROVENANCE_VERSION = 1
CAPTIONER_KEYS = ("captioner", "backend", "model", "prompt", "prompt_version", "prompt_sha")
REASONER_KEYS = ("reasoner", "backend", "model", "prompt", "prompt_version", "prompt_sha", "vocabulary",
                 "source")  # fmt: skip
ENCODER_KEYS = ("encoder", "model", "weights_sha", "dim", "n_t", "template", "map_vocab")
# The checkpoint's ``extra`` key.
EXTRA_KEY = "cue_provenance"
OVERRIDE_FLAG = "--allow-cue-mismatch"


def _distinct(provs: Iterable[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    seen = {json.dumps({k: p.get(k) for k in keys}, sort_keys=True) for p in provs}
    return [json.loads(s) for s in sorted(seen)]


def encoder_provenance(index: dict[str, Any]) -> dict[str, Any]:
    """The text-encoder part, from a feature ``index.json`` (or the same keys of a live encoder)."""
    return {k: index.get(k) for k in ENCODER_KEYS}


def cue_provenance(store: CueStore, index: dict[str, Any]) -> dict[str, Any]:
    """The provenance of the cues in ``store`` encoded as described by the feature ``index``."""
    reasoning = {k: r for k, r in store.reasoning().items() if r.get("status") == "ok"}
    captions = store.captions()
    read = [captions[k] for k, r in reasoning.items() if r.get("caption_sha") is not None and k in captions]
    return {
        "version": PROVENANCE_VERSION,
        "store": store.name,
        "captioners": _distinct((c.get("provenance") or {} for c in read), CAPTIONER_KEYS),
        "reasoners": _distinct((r.get("provenance") or {} for r in reasoning.values()), REASONER_KEYS),
        "text_encoder": encoder_provenance(index),
    }


def live_provenance(
    captioner: dict[str, Any] | None, reasoner: dict[str, Any] | None, encoder_index: dict[str, Any]
) -> dict[str, Any]:
    """The same dict for cues made now (``teso predict --cues auto``) from the ``provenance()`` of
    the captioner (None when the reasoner reads no caption) and the reasoner."""
    return {
        "version": PROVENANCE_VERSION,
        "store": None,
        "captioners": _distinct([captioner], CAPTIONER_KEYS) if captioner is not None else [],
        "reasoners": _distinct([reasoner], REASONER_KEYS) if reasoner is not None else [],
        "text_encoder": encoder_provenance(encoder_index),
    }


def _encoder_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = [k for k in ENCODER_KEYS if k != "model"]
    # The model is a path or hub id that differs between machines for the same weights: compared
    # only when one side has no weights hash (features built before it was recorded).
    if a.get("weights_sha") is None or b.get("weights_sha") is None:
        keys = [k for k in ENCODER_KEYS if k != "weights_sha"]
    return [f"text_encoder.{k} {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def compare_provenance(
    trained: dict[str, Any], current: dict[str, Any], encoder_only: bool = False
) -> list[str]:
    """What differs between a checkpoint's cue provenance and the cues at hand (``[]``: the same).

    ``encoder_only``: compare the text encoder alone (cues given as words by the user).
    """
    diffs = _encoder_diff(trained.get("text_encoder") or {}, current.get("text_encoder") or {})
    if not encoder_only:
        for part, label in (("reasoners", "reasoner"), ("captioners", "captioner")):
            a, b = trained.get(part) or [], current.get(part) or []
            if a != b:
                diffs.insert(0, f"{part} {describe_sources(a, label)} vs {describe_sources(b, label)}")
    return diffs


def describe_sources(items: list[dict[str, Any]], label: str) -> str:
    """A short label of a list of captioner / reasoner configurations."""
    if not items:
        return "[]"
    parts = []
    for d in items:
        bits = [str(d.get(label)), str(d.get("model"))]
        if d.get("prompt"):
            bits.append(f"prompt {d['prompt']} v{d.get('prompt_version')} {d.get('prompt_sha')}")
        if d.get("source"):
            bits.append(f"source {d['source']}")
        parts.append("/".join(bits))
    return "[" + "; ".join(parts) + "]"


def check_cue_provenance(
    checkpoint: Any,
    extra: dict[str, Any],
    current: dict[str, Any],
    *,
    allow: bool = False,
    encoder_only: bool = False,
    where: str = "",
) -> list[str]:
    """Refuse cues that differ from the ones ``checkpoint`` was trained on, unless ``allow``.

    ``extra`` is the checkpoint's extra (its ``cue_provenance``), ``current`` the provenance of the
    cues at hand, ``where`` names them ("cue store 'nouns'"). Returns the differences (``[]`` when
    the same). A difference without ``allow`` is a one-line :class:`TesoError` naming both; with
    ``allow`` it is printed as a note (a cue swap). A checkpoint written before provenance was
    recorded is accepted with a printed warning; when either side lists no reasoner (features made
    without reasoning records) only the encoder is compared, with a printed warning.
    """
    trained = extra.get(EXTRA_KEY)
    if trained is None:
        print(
            f"warning: {checkpoint} records no cue provenance (written before teso recorded it); "
            f"cannot check that {where or 'these cues'} match the cues it was trained on",
            file=sys.stderr,
        )
        return []
    if not encoder_only and (not trained.get("reasoners") or not current.get("reasoners")):
        # Features written without reasoning records (by hand, or a store whose JSONL was removed):
        # what made those cues is unknown, so only the encoder can be compared.
        side = "the checkpoint's training cues" if not trained.get("reasoners") else (where or "these cues")
        print(
            f"warning: {side} have no reasoning records; only the text encoder is checked for {checkpoint}",
            file=sys.stderr,
        )
        encoder_only = True
    diffs = compare_provenance(trained, current, encoder_only)
    if not diffs:
        return []
    trained_name = f"cue store {trained.get('store')!r}" if trained.get("store") else "its training cues"
    line = "; ".join(diffs)
    if not allow:
        raise TesoError(
            f"{checkpoint}: trained on {trained_name}, but {where or 'the cues given'} differ ({line}); "
            f"pass {OVERRIDE_FLAG} to use other cues on purpose (a cue swap)"
        )
    print(f"note: cue swap for {checkpoint}: {trained_name} -> {where or 'the cues given'} ({line})",
          file=sys.stderr)  # fmt: skip
    return diffs
