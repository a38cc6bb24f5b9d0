"""``teso demo``: the whole method on SynthAVS, on a laptop CPU, with nothing downloaded.

Generate SynthAVS (multi-source subset) → cues from the dataset's captions with the noun reasoner →
MiniLM text features → train TeSO, the audio-visual baseline (no text) and the visual-only model
(no audio, no text) → evaluate each under normal / muted / noise-only audio → segment one test
video → ``report.md`` + ``report.json`` + a bar chart + overlays under normal and muted audio.
Every stage is resumable: re-running the same command skips finished work.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from teso.errors import TesoError
from teso.utils.files import atomic_write_json, atomic_write_text

MODELS: dict[str, tuple[str, list[str]]] = {
    "teso": ("TeSO (audio + text cues)", []),
    "av_baseline": ("audio-visual baseline (no text)", ["model.ablation.text=false"]),
    "visual_only": (
        "visual only (no audio, no text)",
        ["model.ablation.text=false", "model.ablation.audio=false"],
    ),
}
CONDITIONS = ("normal", "mute", "wgn10", "wgn40")


@dataclass(frozen=True)
class DemoPlan:
    clips: int  # SynthAVS v1m clips (train/val/test split by the generator)
    train_minutes: float  # wall-clock budget per model
    epochs: int  # the LR schedule's length; the minute budget usually stops training first
    image_size: int


FULL = DemoPlan(clips=400, train_minutes=3.0, epochs=12, image_size=128)
QUICK = DemoPlan(clips=120, train_minutes=0.5, epochs=4, image_size=96)


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(msg, flush=True)


def run_demo(
    out: str | Path = "runs/demo", *, quick: bool = False, seed: int = 0, progress: bool = True
) -> dict:
    out = Path(out)
    plan = QUICK if quick else FULL
    start = time.perf_counter()
    timings: dict[str, float] = {}
    root = out / "synthavs"

    def stage(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    _say(f"[1/6] SynthAVS ({plan.clips} multi-source clips) -> {root}", progress)
    from teso.data.synth import generate

    generate(root, clips=plan.clips, seed=seed, subsets=("v1m",), progress=progress)
    stage("synth", t0)

    t0 = time.perf_counter()
    _say("[2/6] text cues: dataset captions -> noun reasoner -> MiniLM features", progress)
    cue_summary = make_cues(root, progress)
    stage("cues", t0)

    t0 = time.perf_counter()
    checkpoints: dict[str, str] = {}
    for i, (name, (label, overrides)) in enumerate(MODELS.items()):
        _say(f"[3/6] training {i + 1}/{len(MODELS)}: {label} ({plan.train_minutes} min budget)", progress)
        checkpoints[name] = str(train_model(name, overrides, root, out, plan, seed, progress))
    stage("train", t0)

    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    from teso.engine.evaluate import evaluate_checkpoint, format_table

    for name, ckpt in checkpoints.items():
        _say(f"[4/6] evaluating {name} under {', '.join(CONDITIONS)} audio", progress)
        res = evaluate_checkpoint(
            ckpt,
            root,
            split="test",
            audio=",".join(CONDITIONS),
            out=out / "models" / name / "eval-test.json",
            progress=progress,
        )
        results[name] = res
        _say(format_table(res, title=MODELS[name][0]), progress)
    stage("eval", t0)

    t0 = time.perf_counter()
    _say("[5/6] teso predict on one test video", progress)
    pred = predict_one(root, checkpoints["teso"], out, progress)
    stage("predict", t0)

    t0 = time.perf_counter()
    _say("[6/6] report", progress)
    report = write_report(out, plan, quick, results, checkpoints, cue_summary, pred, timings, start, root)
    stage("report", t0)
    _say(f"done in {time.perf_counter() - start:.0f} s: {out / 'report.md'}", progress)
    return report


def make_cues(root: Path, progress: bool) -> dict[str, Any]:
    from teso.cues.captioners import DatasetCaptioner
    from teso.cues.reasoners import NounReasoner
    from teso.cues.runner import list_clips, run_caption, run_encode, run_reason
    from teso.cues.store import CueStore
    from teso.cues.text_encoders import build_text_encoder

    store = CueStore(root, "default")
    clips = list_clips(root)
    summaries = [
        run_caption(store, DatasetCaptioner(), clips, progress=progress),
        run_reason(store, NounReasoner(), clips, progress=progress),
        run_encode(store, build_text_encoder("minilm"), clips, 4, None, False, progress),
    ]
    for s in summaries:
        if s.failed:
            raise TesoError(f"cue stage {s.stage}: {s.failed} item(s) failed; see {store.dir}")
    cues = store.cues()
    per_frame = [len(c) for c in cues.values()]
    return {"frames": len(per_frame), "cues_per_frame": float(np.mean(per_frame)) if per_frame else 0.0}


def train_model(
    name: str, overrides: list[str], root: Path, out: Path, plan: DemoPlan, seed: int, progress: bool
) -> Path:
    from teso.engine.config import load_experiment
    from teso.engine.trainer import Trainer

    exp = load_experiment(
        "synth",
        overrides
        + [
            f"data.root={root}",
            f"model.visual.image_size={plan.image_size}",
            f"train.epochs={plan.epochs}",
            f"train.max_minutes={plan.train_minutes}",
            f"train.seed={seed}",
        ],
    )
    run = out / "models" / name
    last = run / "checkpoints" / "last.safetensors"
    result = Trainer(exp, run, resume=last.is_file(), progress=progress).fit()
    if result.best is None:
        raise TesoError(f"{run}: training wrote no best checkpoint (no validation pass ran)")
    return result.best


def predict_one(root: Path, checkpoint: str, out: Path, progress: bool) -> dict[str, Any]:
    """Write one test clip as an mp4 (frames at 1 fps + its audio) and run ``predict`` on it."""
    from teso.audio import load_audio
    from teso.cues.features import build_clip_tensor
    from teso.cues.store import CueStore
    from teso.cues.text_encoders import build_text_encoder
    from teso.data.avsbench import list_clips
    from teso.engine.predict import predict_video
    from teso.model import read_checkpoint_metadata
    from teso.video import read_frames
    from teso.video.writer import write_mp4

    clip = list_clips(root, ["v1m"], ["test"])[0]
    video = out / "predict" / f"{clip.uid}.mp4"
    write_mp4(video, read_frames(clip.clip_dir / "frames"), fps=1, audio=load_audio(clip.audio_path))
    store_cues = CueStore(root, "default").cues()
    cues = [store_cues[(clip.uid, t)] for t in range(clip.num_frames)]
    atomic_write_json(out / "predict" / f"{clip.uid}.cues.json", {"cues": cues})
    cfg, _ = read_checkpoint_metadata(checkpoint)
    encoder = build_text_encoder("minilm")
    return predict_video(
        video,
        checkpoint,
        out / "predict" / clip.uid,
        cues=cues,
        encode_cues=lambda c: build_clip_tensor(c, encoder, cfg.text.num_cues),
    )


def write_report(
    out: Path,
    plan: DemoPlan,
    quick: bool,
    results: dict[str, Any],
    checkpoints: dict[str, str],
    cue_summary: dict[str, Any],
    pred: dict[str, Any],
    timings: dict[str, float],
    start: float,
    root: Path,
) -> dict[str, Any]:
    from teso.engine.report import bar_chart, overlay_grid

    models = {
        name: {
            cond: {
                k: res["conditions"][cond][k]
                for k in ("miou", "fscore", "delta_m", "delta_f", "miou_nonempty", "pref_rate", "fg_rate")
            }
            for cond in CONDITIONS
        }
        for name, res in results.items()
    }
    chart = bar_chart(models, out / "report_miou.png", labels={k: v[0] for k, v in MODELS.items()})
    grid = overlay_grid(root, checkpoints, out / "report_overlays.png")
    report = {
        "quick": quick,
        "models": models,
        "checkpoints": checkpoints,
        "plan": asdict(plan),
        "cues": cue_summary,
        "predict": {"overlay": pred["overlay"], "summary": str(Path(pred["masks"]).parent / "summary.json")},
        "figures": {"miou_chart": str(chart), "overlays": str(grid)},
        "timings_s": timings,
        "total_s": round(time.perf_counter() - start, 1),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "settings": "AVSBench metrics at the SynthAVS resolution, threshold 0.5, F in batches of 4 clips",
    }
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    return report


def render_markdown(report: dict[str, Any]) -> str:
    def pct(v: Any) -> str:
        return "-" if v is None or (isinstance(v, float) and v != v) else f"{100 * v:.1f}"

    lines = [
        "# teso demo report"
        + (" (QUICK: small data, short training — expect the preference phase)" if report["quick"] else ""),
        "",
        f"{report['date']}, total {report['total_s']:.0f} s. {report['settings']}.",
        "",
        "| model | audio | mIoU | F | Δm | Δf | mIoU (non-empty GT) | preference rate | foreground share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, conds in report["models"].items():
        for cond, r in conds.items():
            lines.append(
                f"| {MODELS[name][0]} | {cond} | {pct(r['miou'])} | {pct(r['fscore'])} | "
                f"{pct(r['delta_m'])} | {pct(r['delta_f'])} | {pct(r['miou_nonempty'])} | "
                f"{pct(r['pref_rate'])} | {pct(r['fg_rate'])} |"
            )
    lines += [
        "",
        "Δm, Δf: relative drop against normal audio (bigger = the model listens). Preference rate: share of "
        "the pixels of visible but silent audible objects segmented as sounding (lower = less preference).",
        "",
        f"![mIoU per audio condition]({Path(report['figures']['miou_chart']).name})",
        "",
        f"![the same test frames under normal and muted audio]({Path(report['figures']['overlays']).name})",
        "",
        f"Prediction on one test video: `{report['predict']['overlay']}`.",
        "",
        f"Cues: {report['cues']['frames']} frames, {report['cues']['cues_per_frame']:.2f} cues per frame "
        "(dataset captions + spaCy nouns). Stage times (s): "
        + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()),
    ]
    return "\n".join(lines) + "\n"
