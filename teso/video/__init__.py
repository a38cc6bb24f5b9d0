"""Frames at 1 fps from an mp4 or a folder of images, and the mp4's audio track."""

from teso.video.io import (
    FRAME_PHASE,
    IMAGE_EXTENSIONS,
    VideoClip,
    frame_index_from_name,
    list_image_frames,
    read_frames,
    read_image_rgb,
    read_video,
)

__all__ = [
    "FRAME_PHASE",
    "IMAGE_EXTENSIONS",
    "VideoClip",
    "frame_index_from_name",
    "list_image_frames",
    "read_frames",
    "read_image_rgb",
    "read_video",
]
