"""Frames at 1 fps from an mp4 or a folder of images, and the mp4's audio track."""

from teso.video.io import (
    FRAME_PHASE,
    IMAGE_EXTENSIONS,
    VideoClip,
    VideoInfo,
    frame_index_from_name,
    iter_video_frames,
    list_image_frames,
    probe_video,
    read_frames,
    read_image_rgb,
    read_video,
)

__all__ = [
    "FRAME_PHASE",
    "IMAGE_EXTENSIONS",
    "VideoClip",
    "VideoInfo",
    "frame_index_from_name",
    "iter_video_frames",
    "list_image_frames",
    "probe_video",
    "read_frames",
    "read_image_rgb",
    "read_video",
]
