"""What each ablation row of the paper's Table 5 wires: one frozen dataclass, resolved once from the config.

``resolve_wiring(config)`` reads ``config.ablation`` (and ``sedam.mask_train``, ``text.padding``) and
says, for the model as built, which prompt tokens exist, how they are made, how they reach the
queries, whether the dynamic mask applies and whether infoNCE is computed and added to the loss.
``build_teso`` builds exactly the parts it names and ``TeSO.decode`` follows it; nothing else decides
the wiring.

The rows (``docs/model.md`` has the same table; ``tests/test_wiring.py`` checks all eight):

================  =====  =====  ===========  ======  ============  ==========  =========
row               audio  text   tokens       prompt  dynamic mask  latents     infoNCE
================  =====  =====  ===========  ======  ============  ==========  =========
TeSO              yes    yes    fused        pmqs    yes           yes         in loss
(−) infoNCE       yes    yes    fused        pmqs    yes           yes         reported
(−) dynamic mask  yes    yes    fused        pmqs    no            yes         in loss
(−) PMQS          yes    yes    fused        append  yes           yes         in loss
(−) SeDAM         yes    yes    projected    pmqs    no            no          none
(−) text          yes    no     latents      pmqs    no            yes         in loss
(−) audio         no     yes    cues         pmqs    no            no          none
(−) text & audio  no     no     none         none    no            no          none
================  =====  =====  ===========  ======  ============  ==========  =========

Token kinds (all [N, K, d], N = B·T frames):
- ``fused``: SeDAM's F_AT = FC(LN(F_T + F~_AL)), the N_T cues fused with the N_L audio latents
  (with ``text.padding="zero"`` an empty slot is a zero F_T row: its token is audio only);
- ``latents``: SeDAM's FC(LN(F_AL)), the N_L latents alone (audio-only prompting), all kept;
- ``cues``: SeDAM's FC(LN(F_T)), the projected cues alone, padding masked;
- ``projected``: no SeDAM, the projected cues (padding masked) and one projected audio token (kept);
- ``none``: nothing prompts the queries (plain Mask2Former with adapters).
Prompt kinds: ``pmqs`` (the queries attend to the tokens under the mask, PMQS), ``append`` (the
tokens join the decoder's queries; masked ones are removed from its self-attention keys).
"""

from __future__ import annotations

from dataclasses import dataclass

from teso.model.config import TeSOConfig

# Table 5's row names, by the set of ablation switches turned off.
_ROWS: dict[frozenset[str], str] = {
    frozenset(): "TeSO",
    frozenset({"infonce"}): "(−) infoNCE",
    frozenset({"dynamic_mask"}): "(−) dynamic mask",
    frozenset({"pmqs"}): "(−) PMQS",
    frozenset({"sedam"}): "(−) SeDAM",
    frozenset({"text"}): "(−) text",
    frozenset({"audio"}): "(−) audio",
    frozenset({"text", "audio"}): "(−) text & audio",
}
_SWITCHES = ("infonce", "dynamic_mask", "pmqs", "sedam", "text", "audio")


@dataclass(frozen=True)
class Wiring:
    """The resolved wiring of one model (see the module docstring for the values)."""

    row: str  # Table 5's row name, or "(−) a & b" for a combination the paper does not report
    audio: bool  # audio encoder + projection built; the model needs audio input
    text: bool  # text projection built; the model needs cue embeddings
    tokens: str  # "fused", "latents", "cues", "projected" or "none"
    prompt: str  # "pmqs", "append" or "none"
    dynamic_mask: bool  # Eq. 4 masks the cues with ξ (needs SeDAM's fusion of audio and text)
    soft_mask: bool  # training relaxes Eq. 4 to log σ(ξ/τ) in PMQS's logits, with a null key
    latents: bool  # N_L latent audio features exist, so infoNCE is computed (and reported)
    infonce_in_loss: bool  # infoNCE is added to the loss
    zero_padding: bool = False  # empty cue slots are zero F_T rows that query the audio (fused tokens only)

    @property
    def sedam(self) -> bool:
        """Whether the SeDAM module is built (it makes the fused, latent-only and cue-only tokens)."""
        return self.tokens in ("fused", "latents", "cues")

    @property
    def pmqs(self) -> bool:
        """Whether the PMQS module is built."""
        return self.prompt == "pmqs"

    def describe(self) -> str:
        """One line: the row and every field, for logs and the ablation table."""
        return (
            f"{self.row}: audio={self.audio} text={self.text} tokens={self.tokens} prompt={self.prompt} "
            f"dynamic_mask={self.dynamic_mask} soft_mask={self.soft_mask} latents={self.latents} "
            f"infonce_in_loss={self.infonce_in_loss} zero_padding={self.zero_padding}"
        )


def resolve_wiring(config: TeSOConfig) -> Wiring:
    """The wiring of ``config`` (its ``ablation`` switches and ``sedam.mask_train``)."""
    ab = config.ablation
    off = frozenset(s for s in _SWITCHES if not getattr(ab, s))
    row = _ROWS.get(off, "(−) " + " & ".join(s for s in _SWITCHES if s in off))
    if not (ab.audio or ab.text):
        tokens = "none"
    elif not ab.sedam:
        tokens = "projected"
    elif ab.audio and ab.text:
        tokens = "fused"
    else:
        tokens = "latents" if ab.audio else "cues"
    prompt = "none" if tokens == "none" else ("pmqs" if ab.pmqs else "append")
    # ξ compares the cues with the audio latents: only SeDAM's fusion has both.
    dynamic_mask = ab.dynamic_mask and tokens == "fused"
    # The soft mask lives in PMQS's attention logits (its null key lets a frame drop every cue); the
    # appended tokens of "(−) PMQS" are masked by Eq. 4's hard decision in training too.
    soft_mask = dynamic_mask and prompt == "pmqs" and config.sedam.mask_train == "soft"
    latents = tokens in ("fused", "latents")
    return Wiring(
        row=row,
        audio=ab.audio,
        text=ab.text,
        tokens=tokens,
        prompt=prompt,
        dynamic_mask=dynamic_mask,
        soft_mask=soft_mask,
        latents=latents,
        infonce_in_loss=latents and ab.infonce,
        # A zero slot carries nothing but what it gathers from the audio: only SeDAM's fusion has that.
        zero_padding=tokens == "fused" and config.text.padding == "zero",
    )
