"""``teso data check ROOT``: validate an AVSBench / SynthAVS tree and report every problem at once.

The checker never fixes or substitutes anything. It reports, each as ``PATH: message``:
missing or unreadable CSV / label2idx.json / frames / masks / audio, missing CSV columns, bad
CSV rows (unknown label or split, duplicate ids, more or fewer fields than the header), a missing
frame folder (one line naming the folder expected), label2idx problems, wrong frame counts (frame
files in a clip's folder that do not match the subset's count), frames of different sizes in one
clip, mask size different from its frame, unknown mask colours, semantic indices out of range
and audio shorter than the clip (seconds = frames at 1 fps). The per-clip rules are those of
:func:`teso.data.avsbench.inspect_clip`, so the Dataset raises on exactly what is reported here.

Speed: frames are measured from their image headers (``full=True`` decodes them too); masks are
decoded fully because their colours must be checked; wav length comes from the soundfile header.
Clips are checked in a thread pool (PIL and libsndfile release the GIL while decoding).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from teso.data.avsbench import (
    ClipRecord,
    Problem,
    inspect_clip,
    label2idx_problems,
    scan_clips,
)
from teso.errors import TesoError
from teso.video.io import IMAGE_EXTENSIONS

__all__ = ["CheckReport", "Problem", "check_tree"]


@dataclass
class CheckReport:
    """The result of :func:`check_tree`.

    Attributes:
        root: the tree checked.
        layout: ``released`` | ``s4-object`` | ``ms3-object``, or None when none was detected.
        problems: every problem found, in CSV order of the clips.
        clips: number of clips checked per ``(label, split)``.
    """

    root: Path
    layout: str | None
    problems: list[Problem] = field(default_factory=list)
    clips: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: layout, clips checked per label/split, problem count."""
        total = sum(self.clips.values())
        groups = ", ".join(f"{label}/{split} {n}" for (label, split), n in sorted(self.clips.items()))
        verdict = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        return (
            f"{self.root}: layout {self.layout or 'unknown'}; {total} clip(s) checked"
            + (f" ({groups})" if groups else "")
            + f"; {verdict}"
        )


def _frame_name_pattern(record: ClipRecord) -> re.Pattern[str]:
    if record.layout == "released":
        return re.compile(r"^\d+\.jpg$")
    if record.layout == "s4-object":
        return re.compile(rf"^{re.escape(record.uid)}_\d+\.png$")
    return re.compile(rf"^{re.escape(record.uid)}\.mp4_\d+\.png$")


def frame_count_problems(record: ClipRecord) -> list[Problem]:
    """A clip whose frame folder holds a different number of its frame files than its subset needs.

    A missing folder is not reported here: :func:`inspect_clip` reports it, naming the path expected.
    """
    folder = record.frame_paths[0].parent
    if not folder.is_dir():
        return []
    pattern = _frame_name_pattern(record)
    found = sorted(
        p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and pattern.match(p.name)
    )
    expected = {p.name for p in record.frame_paths}
    if len(found) == record.num_frames and set(found) == expected:
        return []
    extra = [name for name in found if name not in expected]
    return [
        Problem(
            folder,
            f"wrong frame count: found {len(found)} frame(s), expected {record.num_frames} "
            f"({record.label})" + (f"; unexpected: {', '.join(extra[:5])}" if extra else ""),
        )
    ]


def _check_clip(record: ClipRecord, num_classes: int, full: bool) -> list[Problem]:
    _, clip_problems = inspect_clip(record, num_classes=num_classes, load_frames=full, load_audio=False)
    if clip_problems and clip_problems[0].path == record.clip_dir:
        return clip_problems
    return frame_count_problems(record) + clip_problems


def check_tree(
    root: str | os.PathLike,
    *,
    full: bool = False,
    workers: int | None = None,
    progress: bool = False,
) -> CheckReport:
    """Validate every file of the tree at ``root`` and return all problems (nothing is raised for
    a bad tree; a missing root or an undetectable layout is itself a reported problem).

    Args:
        full: decode every frame too (default: image headers only, which misses pixel data cut
            off after a valid header).
        workers: threads (default: the CPU count).
        progress: show a tqdm bar over clips.
    """
    root = Path(root)
    try:
        layout, records, problems = scan_clips(root)
    except TesoError as exc:
        return CheckReport(root=root, layout=None, problems=[Problem(root, _strip_path(str(exc), root))])
    report = CheckReport(root=root, layout=layout, problems=list(problems))
    num_classes = 71
    if layout == "released":
        mapping, l2i_problems = label2idx_problems(root)
        report.problems.extend(l2i_problems)
        if mapping is not None:
            num_classes = len(mapping)
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda r: _check_clip(r, num_classes, full), records)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(records), desc="data check", unit="clip")
        for record, clip_problems in zip(records, results):
            report.clips[(record.label, record.split)] += 1
            report.problems.extend(clip_problems)
    return report


def _strip_path(message: str, root: Path) -> str:
    prefix = f"{root}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
