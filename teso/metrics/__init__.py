"""Metrics: AVSBench mIoU / F-score and their split-level aggregations, AVSS semantic metrics, and the
audio-control / segmentation-preference metrics. Definitions and conventions: ``docs/metrics.md``."""

from teso.metrics.aggregate import AVSBENCH_CLIPS_PER_BATCH, AVSBENCH_MODES, AVSBenchMeter, SemanticMeter
from teso.metrics.avsbench import (
    REFERENCE_BETA2,
    REFERENCE_NUM_THRESHOLDS,
    REFERENCE_THRESHOLD,
    avsbench_fscore,
    avsbench_miou,
    fscore_curves,
    per_frame_fscore,
    per_frame_iou,
    reference_thresholds,
    threshold_counts,
)
from teso.metrics.control import (
    ForegroundRateMeter,
    PreferenceRateMeter,
    foreground_counts,
    foreground_rate,
    preference_counts,
    preference_rate,
    relative_drop,
)
from teso.metrics.semantic import AVSS_NUM_CLASSES, avss_miou_fscore, semantic_histograms

__all__ = [
    "AVSBENCH_CLIPS_PER_BATCH",
    "AVSBENCH_MODES",
    "AVSS_NUM_CLASSES",
    "REFERENCE_BETA2",
    "REFERENCE_NUM_THRESHOLDS",
    "REFERENCE_THRESHOLD",
    "AVSBenchMeter",
    "ForegroundRateMeter",
    "PreferenceRateMeter",
    "SemanticMeter",
    "avsbench_fscore",
    "avsbench_miou",
    "avss_miou_fscore",
    "foreground_counts",
    "foreground_rate",
    "fscore_curves",
    "per_frame_fscore",
    "per_frame_iou",
    "preference_counts",
    "preference_rate",
    "reference_thresholds",
    "relative_drop",
    "semantic_histograms",
    "threshold_counts",
]
