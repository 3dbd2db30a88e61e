"""Model and input presets.

``paper``: the paper's R(2+1)D-18 on 30 x 112 x 112 clips and ResNet-9 on 257 x 199 log-mels,
512-d features (method.md "Data", "Model"). ``tiny``: small conv nets on 8 x 48 x 48 clips and
64 x 100 log-mels, for CPU runs, demos and tests.

Input geometry (used by :mod:`videolabel.data.augment`):

* ``video_frames`` frames are taken from the stored clip, evenly spaced (train: random offset).
* Training: the short side is resized to ``s ~ U[scale_jitter]`` and a random
  ``video_crop x video_crop`` square is cut (a run's ``scale_jitter_max`` setting widens the upper end:
  the ``tiny`` recipe zooms up to 64 / 48). Evaluation: short side to ``video_short_side``, centre
  crop. Equivalently a square box of ``short_stored * video_crop / s`` stored pixels is resampled to
  ``video_crop``: the box is a fraction of the stored frame, so a cache stored smaller than the
  preset's sizes is scaled relative to its own size (and upsampled).
* ``audio_mels x audio_frames``: the stored spectrogram is average-pooled to this size when different.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from videolabel.models.audio import ResNet9AudioEncoder, SpecCNNEncoder, TinyAudioEncoder
from videolabel.models.selavi import SeLaVi
from videolabel.models.video import FrameCNNEncoder, R2Plus1D18Encoder, TinyVideoEncoder


@dataclass(frozen=True)
class Preset:
    name: str
    video_encoder: str  # "r2plus1d_18" | "tiny3d"
    audio_encoder: str  # "resnet9" | "tiny2d"
    video_frames: int  # frames fed to the model
    video_crop: int  # square crop side fed to the model
    video_short_side: int  # evaluation: short side resized to this, then centre crop
    scale_jitter: tuple[int, int]  # training: short side resized to U[a, b], then random crop
    audio_mels: int  # spectrogram fed to the model: bands ...
    audio_frames: int  # ... x frames
    feat_dim_v: int
    feat_dim_a: int
    video_widths: tuple[int, ...] = ()  # tiny3d only
    audio_widths: tuple[int, ...] = ()  # tiny2d only

    def __post_init__(self) -> None:
        a, b = self.scale_jitter
        if not (0 < a <= b):
            raise ValueError(f"preset {self.name}: bad scale_jitter {self.scale_jitter}")
        if min(self.video_frames, self.video_crop, self.video_short_side, self.audio_mels, self.audio_frames) < 1:
            raise ValueError(f"preset {self.name}: sizes must be positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preset":
        d = dict(data)
        for key in ("scale_jitter", "video_widths", "audio_widths"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def replace(self, **changes: Any) -> "Preset":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        video_encoder="r2plus1d_18",
        audio_encoder="resnet9",
        video_frames=30,
        video_crop=112,
        video_short_side=128,
        scale_jitter=(128, 160),
        audio_mels=257,
        audio_frames=199,
        feat_dim_v=512,
        feat_dim_a=512,
    ),
    "tiny": Preset(
        name="tiny",
        video_encoder="frames2d",
        audio_encoder="spec2d",
        video_frames=2,
        video_crop=48,
        video_short_side=48,
        scale_jitter=(48, 54),
        audio_mels=64,
        audio_frames=100,
        feat_dim_v=128,
        feat_dim_a=128,
        video_widths=(32, 64, 128, 128),
        audio_widths=(32, 64, 128, 128),
    ),
}


def get_preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}") from None


def build_video_encoder(preset: str | Preset) -> nn.Module:
    p = get_preset(preset)
    if p.video_encoder == "r2plus1d_18":
        enc: nn.Module = R2Plus1D18Encoder()
    elif p.video_encoder == "tiny3d":
        enc = TinyVideoEncoder(p.video_widths or (16, 32, 64, 128))
    elif p.video_encoder == "frames2d":
        enc = FrameCNNEncoder(p.video_widths or (32, 64, 128, 128))
    else:
        raise ValueError(f"unknown video encoder {p.video_encoder!r}")
    if enc.out_dim != p.feat_dim_v:
        raise ValueError(f"preset {p.name}: video encoder gives {enc.out_dim}-d, preset says {p.feat_dim_v}")
    return enc


def build_audio_encoder(preset: str | Preset) -> nn.Module:
    p = get_preset(preset)
    if p.audio_encoder == "resnet9":
        enc: nn.Module = ResNet9AudioEncoder()
    elif p.audio_encoder == "tiny2d":
        enc = TinyAudioEncoder(p.audio_widths or (32, 64, 128, 128))
    elif p.audio_encoder == "spec2d":
        enc = SpecCNNEncoder(p.audio_widths or (32, 64, 128, 128))
    else:
        raise ValueError(f"unknown audio encoder {p.audio_encoder!r}")
    if enc.out_dim != p.feat_dim_a:
        raise ValueError(f"preset {p.name}: audio encoder gives {enc.out_dim}-d, preset says {p.feat_dim_a}")
    return enc


def build_model(preset: str | Preset, num_clusters: int, num_heads: int, *, fusion: bool = False,
                head_layers: int = 2) -> SeLaVi:
    """A randomly initialised :class:`SeLaVi` for ``preset`` with ``num_heads`` heads of ``num_clusters``
    (``fusion``: heads on the concatenated features instead, Table 3(b)'s baseline; ``head_layers``: 2 for
    the paper's MLP heads, 1 for linear ones)."""
    p = get_preset(preset)
    model = SeLaVi(
        build_video_encoder(p),
        build_audio_encoder(p),
        num_heads=num_heads,
        num_clusters=num_clusters,
        feat_dim_v=p.feat_dim_v,
        feat_dim_a=p.feat_dim_a,
        fusion=fusion,
        head_layers=head_layers,
    )
    model.preset = p  # plain attribute, not a submodule
    return model


def describe(preset: str | Preset) -> str:
    """One line for logs."""
    p = get_preset(preset)
    a, b = p.scale_jitter
    return (
        f"preset {p.name}: video {p.video_encoder} {p.video_frames}x{p.video_crop}x{p.video_crop} "
        f"(train short side U[{a},{b}], eval {p.video_short_side} + centre crop) -> {p.feat_dim_v}-d; "
        f"audio {p.audio_encoder} {p.audio_mels}x{p.audio_frames} -> {p.feat_dim_a}-d"
    )
