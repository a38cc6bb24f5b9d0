"""Training: AdamW in two groups, checkpoints every epoch (atomic), exact resume, JSONL +
TensorBoard logs, the best checkpoint by validation mIoU, and DDP under ``torchrun``."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from teso.data.avsbench import collate, detect_layout
from teso.engine.config import ExperimentConfig, deep_update
from teso.engine.data import ClipDataset, open_text_features, segmentation_targets
from teso.engine.distributed import DistInfo, all_gather_objects, all_reduce_sum, barrier, init_distributed
from teso.engine.evaluate import evaluate
from teso.engine.optim import parameter_groups
from teso.engine.runlog import RunLogger
from teso.engine.sampling import epoch_batches
from teso.errors import TesoError
from teso.model import TeSO, TeSOConfig, build_teso, get_variant
from teso.model.checkpoint import (
    load_checkpoint_into,
    load_training_state,
    read_checkpoint_metadata,
    recover_checkpoint_pair,
    save_checkpoint_pair,
    training_state_path,
)
from teso.model.foundation_sources import foundation_provenance
from teso.model.preprocess import TeSOTargets, preprocess_frames
from teso.utils.files import atomic_write_text

# Keys that may differ between a run and its resumption: they only say where to stop.
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "max_steps"), ("train", "max_minutes")}


def model_config_for(exp: ExperimentConfig) -> TeSOConfig:
    """The experiment's model: a registered variant with the experiment's overrides applied."""
    spec = dict(exp.model)
    variant = spec.pop("variant", None)
    if not variant:
        raise TesoError("model.variant: required (e.g. tiny or swin-base-ade)")
    return TeSOConfig.from_dict(deep_update(get_variant(variant).to_dict(), spec))


@dataclass
class TrainResult:
    run_dir: Path
    last: Path
    best: Path | None
    best_miou: float
    steps: int
    epochs_done: int
    stopped: str  # "finished", "max_steps" or "max_minutes"


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        # Mask2Former's loss samples its points on the GPU: its generator is part of the run's state.
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _poly(total: int, warmup: int):
    """Mask2Former's poly schedule (power 0.9) with optional linear warm-up, as a LambdaLR factor."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1.0 - step / max(1, total)) ** 0.9

    return factor


def _diff(a: dict, b: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, prefix + (k,))
        elif va != vb:
            out.append(prefix + (k,))
    return out


class Trainer:
    """Train one experiment into ``run_dir``.

    Files: ``config.yaml`` (the resolved experiment), ``log.jsonl`` + ``tb/`` (metrics),
    ``checkpoints/last.safetensors`` (+ ``last.train.pt``: optimiser, scheduler, RNG, position) and
    ``checkpoints/best.safetensors`` (best validation mIoU). ``resume=True`` continues a killed run
    from its last checkpoint exactly: same data order, same RNG, same optimiser state.
    """

    def __init__(
        self,
        exp: ExperimentConfig,
        run_dir: str | Path,
        *,
        resume: bool = False,
        device: str = "auto",
        progress: bool = True,
        info: DistInfo | None = None,
    ) -> None:
        self.exp = exp
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.info = info or init_distributed(device)
        self.progress = progress and self.info.is_main
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.last_path = self.ckpt_dir / "last.safetensors"
        self.best_path = self.ckpt_dir / "best.safetensors"
        self.model_config = model_config_for(exp)

    # ----- setup ----------------------------------------------------------------------------------
    def _adopt_checkpoint_model_config(self) -> None:
        """Same experiment, other model: teso's defaults changed since the run began (e.g.
        ``text.padding``). Resuming continues the model the checkpoint holds, and says so."""
        cfg, _ = read_checkpoint_metadata(self.last_path)
        differs = _diff(cfg.to_dict(), self.model_config.to_dict())
        if differs and self.info.is_main:
            names = ", ".join(".".join(k) for k in differs)
            print(f"--resume: continuing the model stored in {self.last_path} ({names} as it was trained)")
        self.model_config = cfg

    def _init_provenance(self, path: str | None) -> dict[str, Any] | None:
        """``train.init_from``'s checkpoint checked against this run's model: the same model config
        (its weights would not fit another), returned as the record saved with the run."""
        if not path:
            return None
        if not Path(path).is_file():
            raise TesoError(
                f"train.init_from: {path} does not exist (expected a teso checkpoint .safetensors)"
            )
        cfg, extra = read_checkpoint_metadata(path)
        # Where the foundations lie and the variant's name do not change the weights' shapes; the
        # frozen weights themselves are checked by hash when the file is loaded.
        ignored = {("visual", "pretrained"), ("audio", "weights"), ("name",)}
        differs = [k for k in _diff(cfg.to_dict(), self.model_config.to_dict()) if k not in ignored]
        if differs:
            names = ", ".join(".".join(k) for k in differs)
            raise TesoError(
                f"train.init_from: {path} holds another model (differs in {names}); start from a checkpoint "
                "of the same model config"
            )
        exp = extra.get("experiment") or {}
        return {"path": str(path), "step": extra.get("step"), "experiment": exp.get("name")}

    def _prepare_run_dir(self) -> None:
        cfg_path = self.run_dir / "config.yaml"
        current = json.loads(json.dumps(self.exp.to_dict()))  # tuples -> lists, as YAML reads them back
        if self.info.is_main and self.ckpt_dir.is_dir():
            # A checkpoint write interrupted by a crash: finish it if it was committed, else drop
            # its partial files, so that last.* / best.* are the last complete set.
            recover_checkpoint_pair(self.last_path, copies=[self.best_path])
        barrier(self.info)
        if self.resume:
            if not self.last_path.is_file():
                raise TesoError(
                    f"--resume: {self.last_path} does not exist (nothing to resume in {self.run_dir})"
                )
            saved = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else None
            if saved is not None:
                changed = [k for k in _diff(saved, current) if k not in RESUMABLE_CHANGES]
                if changed:
                    names = ", ".join(".".join(k) for k in changed)
                    raise TesoError(
                        f"--resume: the config differs from {cfg_path} in {names}; resume with the same "
                        "config (only train.epochs / max_steps / max_minutes may change) or use a new --out"
                    )
                self._adopt_checkpoint_model_config()
        elif self.last_path.is_file():
            raise TesoError(
                f"{self.run_dir} already holds a run ({self.last_path}); pass --resume to continue it "
                "or choose another --out"
            )
        if self.info.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cfg_path, yaml.safe_dump(current, sort_keys=False))
        barrier(self.info)

    def _datasets(self) -> tuple[ClipDataset, ClipDataset | None]:
        d, mc = self.exp.data, self.model_config
        detect_layout(d.root)  # a wrong data.root is named as such, before any feature file is looked for
        text = open_text_features(d.root, d.cues, d.text_encoder, mc.text.dim) if mc.ablation.text else None
        # Saved with every checkpoint so that prediction encodes new cues with the same encoder.
        self.text_provenance = (
            {"encoder": text.encoder, "model": text.model, "n_t": text.n_t} if text is not None else None
        )
        if text is not None:
            text.check_slots(mc.text.num_cues)
        # What made the cues (captioner, reasoner, prompt, encoder weights): `teso eval` checks it.
        self.cue_provenance = text.provenance() if text is not None else None
        size = mc.visual.image_size
        train = ClipDataset(d.root, d.subset, d.train_split, image_size=size, text=text, mask_size=size)
        val = None
        if d.val_split:
            val = ClipDataset(d.root, d.subset, d.val_split, image_size=size, text=text, audio="waveform")
        return train, val

    def _optimizer(self, model: TeSO) -> torch.optim.Optimizer:
        t = self.exp.train
        groups = parameter_groups(
            model, lr=t.lr, lr_visual_adapters=t.lr_visual_adapters, weight_decay=t.weight_decay
        )
        if not groups:
            raise TesoError("model has no trainable parameters (check freeze_foundation and the ablations)")
        return torch.optim.AdamW(groups)  # every group carries its own lr and weight decay

    # ----- the loop -------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        t = self.exp.train
        info = self.info
        if not self.resume:  # refused before the run folder is touched
            self.init_provenance = self._init_provenance(t.init_from)
        self._prepare_run_dir()
        _seed_all(t.seed)
        train_ds, val_ds = self._datasets()
        model = build_teso(self.model_config).to(info.device)
        # foundation.json of `teso pretrain` foundations under the model: scores, steps, dataset hash.
        foundations = foundation_provenance(self.model_config)
        optimizer = self._optimizer(model)
        batches_per_epoch = len(
            epoch_batches(len(train_ds), t.batch_size, seed=t.seed, epoch=0, world_size=info.world_size)
        )
        # The schedule spans the configured epochs; max_steps / max_minutes only stop early (like a
        # kill), so a run stopped by them resumes onto exactly the uninterrupted run's schedule.
        total = t.epochs * batches_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _poly(total, t.warmup_steps))

        # Where the weights began: recorded in every checkpoint of the run (resumed runs keep it).
        if self.resume:  # the init file may have moved since; the run's own record says where it began
            self.init_provenance = read_checkpoint_metadata(self.last_path)[1].get("init_from")
        if t.init_from and not self.resume:
            load_checkpoint_into(model, t.init_from)  # verifies the file's hash and frozen parts
        epoch, batch_in_epoch, step, best, elapsed = 0, 0, 0, -1.0, 0.0
        if self.resume:
            cfg, _ = read_checkpoint_metadata(self.last_path)
            if cfg.to_dict() != self.model_config.to_dict():
                raise TesoError(f"--resume: {self.last_path} was trained with another model config")
            # Verifies the content hash and, for a small checkpoint, the frozen foundation's hash.
            extra = load_checkpoint_into(model, self.last_path)
            state = load_training_state(self.last_path)  # also checks it was written with these weights
            if extra.get("step") != state["step"]:  # files of a pre-hash teso written by separate saves
                raise TesoError(
                    f"--resume: {self.last_path} (step {extra.get('step')}) and its training state "
                    f"(step {state['step']}) do not belong together (written by separate saves); "
                    "restore both files from a backup"
                )
            if state["world_size"] != info.world_size:
                raise TesoError(
                    f"--resume: the run used {state['world_size']} process(es), this one has "
                    f"{info.world_size}: the data order and schedule would change; use the same number"
                )
            saved_sizes = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
            sizes = [len(g["params"]) for g in optimizer.param_groups]
            if saved_sizes != sizes:
                # A run saved before the paper's per-module learning rates (2 groups) cannot carry
                # its Adam moments over to the new grouping without guessing which is which (and
                # torch's load_state_dict would raise a bare ValueError on other group sizes).
                raise TesoError(
                    f"--resume: {training_state_path(self.last_path)} holds {len(saved_sizes)} optimiser "
                    f"group(s), this teso builds {len(sizes)} (parameters per group {saved_sizes} vs "
                    f"{sizes}: the parameter grouping changed since the run was saved); start the run "
                    "again or resume with the teso version that wrote it"
                )
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"][info.rank])
            epoch, batch_in_epoch, step = state["epoch"], state["batch_in_epoch"], state["step"]
            best, elapsed = state["best_miou"], state["elapsed"]

        ddp = DistributedDataParallel(model, find_unused_parameters=True) if info.enabled else model
        logger = RunLogger(self.run_dir, enabled=info.is_main)
        if logger.tensorboard_note and self.progress:
            print(logger.tensorboard_note)
        use_amp = t.amp and info.device.type == "cuda"
        start_time = time.perf_counter() - elapsed
        nc = self.model_config.num_classes
        ab = self.model_config.ablation
        size = self.model_config.visual.image_size

        def checkpoint(next_epoch: int, next_batch: int, is_best: bool = False) -> None:
            rngs = all_gather_objects(_rng_state(), info)  # every rank's generators, for exact resume
            failure: Exception | None = None
            if info.is_main:
                try:
                    save(rngs, next_epoch, next_batch, is_best)
                except Exception as err:  # a full disk, say: every rank must stop, not wait at a barrier
                    failure = err
            if info.enabled:
                told = all_gather_objects(None if failure is None else str(failure), info)[0]
                if failure is None and told is not None:
                    raise TesoError(f"rank {info.rank}: stopping because rank 0 could not save: {told}")
            if failure is not None:
                raise failure

        def save(rngs: list, next_epoch: int, next_batch: int, is_best: bool) -> None:
            extra = {
                "experiment": self.exp.to_dict(),
                "epoch": next_epoch,
                "step": step,
                "text_features": self.text_provenance,
                "init_from": self.init_provenance,
                "foundations": foundations,
                "cue_provenance": self.cue_provenance,
            }
            # One unit: weights, training state and (on a new best) best.safetensors are replaced
            # together, so a crash or a full disk at any byte leaves the previous complete set.
            save_checkpoint_pair(
                model,
                self.last_path,
                extra,
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rngs,
                    "world_size": info.world_size,
                    "epoch": next_epoch,
                    "batch_in_epoch": next_batch,
                    "step": step,
                    "best_miou": best,
                    "elapsed": time.perf_counter() - start_time,
                },
                copies=[self.best_path] if is_best else [],
            )

        def out_of_budget() -> str | None:
            if t.max_steps and step >= t.max_steps:
                return "max_steps"
            if t.max_minutes and (time.perf_counter() - start_time) / 60 >= t.max_minutes:
                return "max_minutes"
            return None

        stopped = out_of_budget() or "finished"  # a resumed run that had already stopped stays stopped
        while epoch < t.epochs and stopped == "finished":
            batches = epoch_batches(
                len(train_ds),
                t.batch_size,
                seed=t.seed,
                epoch=epoch,
                rank=info.rank,
                world_size=info.world_size,
            )
            loader = DataLoader(
                train_ds,
                batch_sampler=batches[batch_in_epoch:],
                collate_fn=collate,
                num_workers=self.exp.data.num_workers,
                # Its own generator: a DataLoader iterator otherwise draws its worker seed from the
                # global RNG, and a resumed run (one more iterator) would then drift from the original.
                generator=torch.Generator().manual_seed(t.seed + epoch),
            )
            model.train()
            bar = tqdm(
                total=len(batches),
                initial=batch_in_epoch,
                desc=f"epoch {epoch + 1}/{t.epochs}",
                disable=not self.progress,
                dynamic_ncols=True,
                leave=False,
            )
            sums: dict[str, float] = {}
            count = 0
            for batch in loader:
                frames = preprocess_frames(batch["frames"], size).to(info.device)
                audio = batch["audio"].to(info.device) if ab.audio else None
                text = batch["text"].to(info.device) if ab.text else None
                text_count = batch["text_count"].to(info.device) if ab.text else None
                targets = TeSOTargets(
                    masks=segmentation_targets(batch, nc).to(info.device),
                    annotated=batch["annotated"].to(info.device),
                )
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    # S4 train annotates frame 0 only: the visual network skips the other frames.
                    out = ddp(frames, audio, text, text_count, targets, annotated_only=True)
                losses = out.losses
                loss = losses["loss"]
                if not torch.isfinite(loss):
                    raise TesoError(f"training diverged: loss is {loss.item()} at step {step}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    [p for g in optimizer.param_groups for p in g["params"]], t.grad_clip
                )
                optimizer.step()
                scheduler.step()
                step += 1
                batch_in_epoch += 1
                count += 1
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if step % t.log_every == 0:
                    scalars = self._reduced({k: v / count for k, v in sums.items()})
                    scalars["grad_norm"] = float(grad_norm)
                    scalars["lr"] = scheduler.get_last_lr()[-1]
                    logger.log("train", step, epoch, scalars)
                    sums, count = {}, 0
                if t.checkpoint_every_steps and step % t.checkpoint_every_steps == 0:
                    checkpoint(epoch, batch_in_epoch)
                reason = out_of_budget()
                if reason:
                    stopped = reason
                    break
            bar.close()
            epoch_finished = batch_in_epoch >= len(batches)
            if epoch_finished:
                epoch, batch_in_epoch = epoch + 1, 0
            if val_ds is not None and (
                epoch_finished and epoch % max(1, t.eval_every) == 0 or stopped != "finished"
            ):
                # Validation must not move the training RNG streams: a run stopped by max_steps
                # validates at a step where the uninterrupted run does not, and its resume has to
                # continue that run's stream exactly (transformers 5.0's decoder draws from it).
                rng = _rng_state()
                res = evaluate(
                    model,
                    val_ds,
                    ["normal"],
                    batch_clips=self.exp.eval.batch_clips,
                    threshold=self.exp.eval.threshold,
                    seed=t.seed,
                    info=info,
                )["conditions"]["normal"]
                _set_rng_state(rng)
                logger.log(
                    "val",
                    step,
                    epoch,
                    {k: v for k, v in res.items() if k not in ("by_mode", "kept_by_frame", "per_clip")},
                )
                if self.progress:
                    print(
                        f"epoch {epoch}: step {step}  "
                        f"val mIoU {100 * res['miou']:.2f}  F {100 * res['fscore']:.2f}"
                    )
                # AVSS semantic models are selected by the paper's metric, the 71-class mIoU.
                score = res["semantic_miou"] if nc > 1 else res["miou"]
                if score > best:
                    best = score
                    checkpoint(epoch, batch_in_epoch, is_best=True)
                    barrier(info)
                    continue
            checkpoint(epoch, batch_in_epoch)
            barrier(info)
        logger.close()
        return TrainResult(
            run_dir=self.run_dir,
            last=self.last_path,
            best=self.best_path if self.best_path.is_file() else None,
            best_miou=best,
            steps=step,
            epochs_done=epoch,
            stopped=stopped,
        )

    def _reduced(self, scalars: dict[str, float]) -> dict[str, float]:
        """Mean of each scalar over ranks (logged by rank 0)."""
        if not self.info.enabled:
            return scalars
        keys = sorted(scalars)
        t = torch.tensor([scalars[k] for k in keys], dtype=torch.float64)
        t = all_reduce_sum(t, self.info) / self.info.world_size
        return dict(zip(keys, t.tolist()))
