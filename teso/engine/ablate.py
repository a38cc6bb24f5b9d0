"""``teso ablate``: every row of SPEC §8 trained and evaluated on the same code, as paper Table 5."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from teso.engine.config import load_experiment
from teso.engine.evaluate import evaluate_checkpoint
from teso.engine.trainer import Trainer
from teso.errors import TesoError
from teso.utils.files import atomic_write_json, atomic_write_text

# row name -> (paper label, model.ablation overrides, paper MS3 mIoU for reference)
ABLATIONS: dict[str, tuple[str, dict[str, bool], float]] = {
    "teso": ("TeSO", {}, 66.02),
    "no-infonce": ("(−) infoNCE", {"infonce": False}, 65.34),
    "no-dynamic-mask": ("(−) dynamic mask", {"dynamic_mask": False}, 64.78),
    "no-pmqs": ("(−) PMQS", {"pmqs": False}, 62.90),
    "no-sedam": ("(−) SeDAM", {"sedam": False}, 62.22),
    "no-text": ("(−) text", {"text": False}, 62.28),
    "no-audio": ("(−) audio", {"audio": False}, 42.11),
    "no-text-audio": ("(−) text & audio", {"text": False, "audio": False}, 37.35),
}


def row_overrides(row: str) -> list[str]:
    if row not in ABLATIONS:
        raise TesoError(f"--rows: unknown row {row!r}; expected some of {', '.join(ABLATIONS)}")
    return [f"model.ablation.{k}={str(v).lower()}" for k, v in ABLATIONS[row][1].items()]


def run_ablations(
    config: str,
    overrides: list[str],
    out: str | Path,
    *,
    rows: list[str],
    audio: str | None = None,
    device: str = "auto",
    progress: bool = True,
) -> str:
    """Train + evaluate each row into ``out/ROW``; resumable (finished rows are skipped, a killed
    training resumes). Writes ``out/table.md`` and ``out/table.json``; returns the markdown table."""
    out = Path(out)
    results: dict[str, Any] = {}
    for row in rows:
        exp = load_experiment(config, overrides + row_overrides(row))
        run = out / row
        result_path = run / "eval-test.json"
        if not result_path.is_file():
            last = run / "checkpoints" / "last.safetensors"
            if progress:
                print(f"== {row}: {ABLATIONS[row][0]} -> {run}")
            trained = Trainer(exp, run, resume=last.is_file(), device=device, progress=progress).fit()
            ckpt = trained.best or trained.last
            evaluate_checkpoint(
                ckpt,
                exp.data.root,
                split=exp.data.test_split,
                audio=audio or ",".join(exp.eval.audio),
                threshold=exp.eval.threshold,
                batch_clips=exp.eval.batch_clips,
                out=result_path,
                device=device,
                progress=progress,
            )
        results[row] = json.loads(result_path.read_text())
    table = format_ablation_table(results)
    atomic_write_text(out / "table.md", table + "\n")
    atomic_write_json(out / "table.json", results)
    return table


def format_ablation_table(results: dict[str, Any]) -> str:
    conds = list(next(iter(results.values()))["conditions"]) if results else []
    head = "| Method | " + " | ".join(f"mIoU {c} | F {c}" for c in conds) + " | Δm mute | paper MS3 mIoU |"
    sep = "|---" * (2 + 2 * len(conds) + 1) + "|"
    lines = [head, sep]
    for row, res in results.items():
        c = res["conditions"]
        cells = " | ".join(f"{100 * c[k]['miou']:.2f} | {100 * c[k]['fscore']:.2f}" for k in conds)
        dm = f"{100 * c['mute']['delta_m']:.1f}%" if "mute" in c else "-"
        lines.append(f"| {ABLATIONS[row][0]} | {cells} | {dm} | {ABLATIONS[row][2]:.2f} |")
    return "\n".join(lines)
