"""``teso ablate``: every row of SPEC §8 trained and evaluated on the same code, as paper Table 5."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from teso.engine.config import load_experiment
from teso.engine.evaluate import evaluate_checkpoint, parse_conditions
from teso.engine.trainer import RESUMABLE_CHANGES, Trainer, _diff, model_config_for
from teso.errors import TesoError
from teso.model.checkpoint import commit_journal_path, read_checkpoint_metadata
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


# Cue-source rows (paper Table 3 / D7): the full model trained on another cue store of the dataset
# (made with `teso cues all ROOT --store NAME --reasoner NAME`); not run unless --rows names them.
# row name -> (label, cue store, paper MS3 mIoU or None)
CUE_ROWS: dict[str, tuple[str, str, float | None]] = {
    "cues-nouns": ("TeSO-n (vocabulary-mapped nouns)", "nouns", 63.31),
    "cues-oracle": ("TeSO, oracle cues (a ceiling)", "oracle", None),
    "cues-llm": ("TeSO, local LLM cues", "llm", None),
}


def row_overrides(row: str) -> list[str]:
    if row in CUE_ROWS:
        return [f"data.cues={CUE_ROWS[row][1]}"]
    if row not in ABLATIONS:
        known = ", ".join([*ABLATIONS, *CUE_ROWS])
        raise TesoError(f"--rows: unknown row {row!r}; expected some of {known}")
    return [f"model.ablation.{k}={str(v).lower()}" for k, v in ABLATIONS[row][1].items()]


def row_label(row: str) -> tuple[str, float | None]:
    """The row's label and the paper's MS3 mIoU beside it (None where the paper has none)."""
    if row in CUE_ROWS:
        return CUE_ROWS[row][0], CUE_ROWS[row][2]
    return ABLATIONS[row][0], ABLATIONS[row][2]


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
    """Train + evaluate each row into ``out/ROW``; writes ``out/table.md`` (with the machine),
    ``out/table.json`` (the rows' eval results) and ``out/report.json`` (the rows, this process's
    environment and the dataset's identity) and returns the markdown table.

    Resumable: a row's result (``ROW/eval-test.json``) is reused only when it was made with the same
    resolved experiment and audio conditions (recorded in it as ``row_config``). Otherwise the row's
    training resumes where it stopped (a killed run, or a larger ``train.epochs`` / ``max_steps`` /
    ``max_minutes``) and the row is evaluated again; any other change to a row that already holds a
    training run is an error, never a stale row in the table.
    """
    out = Path(out)
    results: dict[str, Any] = {}
    plans = []
    for row in rows:  # check every row before training any, so a refusal costs nothing
        exp = load_experiment(config, overrides + row_overrides(row))
        run = out / row
        model = model_config_for(exp).to_dict()
        key = {
            "experiment": json.loads(json.dumps(exp.to_dict())),  # tuples -> lists, as JSON reads back
            "model": json.loads(json.dumps(model)),  # the resolved model: teso's defaults can change
            "audio": parse_conditions(audio or list(exp.eval.audio)),
        }
        result_path = run / "eval-test.json"
        last = run / "checkpoints" / "last.safetensors"
        saved = run / "config.yaml"
        if last.is_file() and saved.is_file():
            changed = [
                k
                for k in _diff(yaml.safe_load(saved.read_text()) or {}, key["experiment"])
                if k not in RESUMABLE_CHANGES
            ]
            if changed:
                raise TesoError(
                    f"{run}: row {row!r} was trained with another config (differs in "
                    f"{', '.join('.'.join(k) for k in changed)}); its result would be stale. Use another "
                    f"--out, or delete {run} to retrain it"
                )
            trained_as, extra = read_checkpoint_metadata(last)
            other = _diff(trained_as.to_dict(), model)
            if other:
                raise TesoError(
                    f"{run}: row {row!r} was trained as another model (differs in "
                    f"{', '.join('.'.join(k) for k in other)}: teso's defaults changed since); its result "
                    f"would not match rows trained now. Use another --out, or delete {run} to retrain it"
                )
            t = exp.train
            if (t.max_steps and extra.get("step", 0) > t.max_steps) or extra.get("epoch", 0) > t.epochs:
                raise TesoError(
                    f"{run}: row {row!r} has already trained {extra.get('step')} steps / "
                    f"{extra.get('epoch')} epochs, more than train.max_steps={t.max_steps} / "
                    f"train.epochs={t.epochs} ask for; use another --out, or delete {run} to retrain it"
                )
        plans.append((row, exp, run, key, result_path, last))
    for row, exp, run, key, result_path, last in plans:
        previous = json.loads(result_path.read_text()) if result_path.is_file() else None
        if previous is None or previous.get("row_config") != key:
            if progress:
                print(f"== {row}: {row_label(row)[0]} -> {run}")
            # A first save cut between its commit and its renames leaves only the journal: resume it.
            resume = last.is_file() or commit_journal_path(last).is_file()
            trained = Trainer(exp, run, resume=resume, device=device, progress=progress).fit()
            ckpt = trained.best or trained.last
            res = evaluate_checkpoint(
                ckpt,
                exp.data.root,
                split=exp.data.test_split,
                audio=key["audio"],
                threshold=exp.eval.threshold,
                batch_clips=exp.eval.batch_clips,
                out=result_path,
                device=device,
                progress=progress,
            )
            res.pop("json", None)
            res["row_config"] = key  # written last: a result without it is never reused
            atomic_write_json(result_path, res)
        results[row] = json.loads(result_path.read_text())
    from teso.data.identity import dataset_identity
    from teso.utils.environment import environment_record, machine_line

    env = environment_record()
    table = format_ablation_table(results)
    # Each row's own eval result records the machine that evaluated it (a reused row: the earlier one).
    machines = sorted({machine_line(r["environment"]) for r in results.values() if r.get("environment")})
    footer = "Machine: " + "; ".join(machines or [machine_line(env)])
    atomic_write_text(out / "table.md", table + "\n\n" + footer + "\n")
    atomic_write_json(out / "table.json", results)
    atomic_write_json(
        out / "report.json",
        {
            "rows": results,
            "environment": env,
            "dataset": dataset_identity(plans[0][1].data.root) if plans else None,
        },
    )
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
        label, paper = row_label(row)
        lines.append(f"| {label} | {cells} | {dm} | {'-' if paper is None else f'{paper:.2f}'} |")
    return "\n".join(lines)
