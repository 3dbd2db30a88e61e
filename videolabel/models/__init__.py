"""Encoders, clustering heads, the two-tower SeLaVi module and presets (method.md "Model")."""

from videolabel.models.audio import ResNet9AudioEncoder, SpecCNNEncoder, TinyAudioEncoder
from videolabel.models.heads import ClusterHead, make_heads
from videolabel.models.presets import (
    PRESETS,
    Preset,
    build_audio_encoder,
    build_model,
    build_video_encoder,
    describe,
    get_preset,
)
from videolabel.models.selavi import SeLaVi
from videolabel.models.video import FrameCNNEncoder, R2Plus1D18Encoder, TinyVideoEncoder

__all__ = [
    "PRESETS",
    "ClusterHead",
    "Preset",
    "R2Plus1D18Encoder",
    "ResNet9AudioEncoder",
    "SeLaVi",
    "FrameCNNEncoder",
    "SpecCNNEncoder",
    "TinyAudioEncoder",
    "TinyVideoEncoder",
    "build_audio_encoder",
    "build_model",
    "build_video_encoder",
    "describe",
    "get_preset",
    "make_heads",
]
