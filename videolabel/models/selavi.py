"""The two-tower SeLaVi module (paper section 3; method.md "Model").

A visual encoder ``f_v`` and an audio encoder ``f_a``, each followed by H clustering heads with K
outputs. Head h of both modalities predicts the same labels (the labels come from the
self-labelling step, outside this module).

With ``fusion=True`` the module also holds H heads on the concatenated features ``[f_v; f_a]``: the
paper's Table 3(b) baseline ("feature concatenation followed by a single clustering head").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from videolabel.models.heads import make_heads, stack_heads

_VIDEO = ("video", "visual", "v")
_AUDIO = ("audio", "a")


def _modality(name: str) -> str:
    key = str(name).lower()
    if key in _VIDEO:
        return "video"
    if key in _AUDIO:
        return "audio"
    raise ValueError(f"unknown modality {name!r}: expected 'video' or 'audio'")


class SeLaVi(nn.Module):
    """Two encoders and their clustering heads.

    ``forward(video=[B,3,T,H,W], audio=[B,1,F,T])`` returns a dict with ``video_logits`` and/or
    ``audio_logits`` of shape ``[H, B, K]`` (float32) for whichever modalities are given; a fusion
    model (``fusion=True``) returns ``fused_logits`` ``[H, B, K]`` instead, and needs both.
    """

    def __init__(
        self,
        video_encoder: nn.Module,
        audio_encoder: nn.Module,
        num_heads: int,
        num_clusters: int,
        feat_dim_v: int,
        feat_dim_a: int,
        fusion: bool = False,
        head_layers: int = 2,
    ) -> None:
        super().__init__()
        self.video_encoder = video_encoder
        self.audio_encoder = audio_encoder
        self.num_heads = int(num_heads)
        self.num_clusters = int(num_clusters)
        self.feat_dim_v = int(feat_dim_v)
        self.feat_dim_a = int(feat_dim_a)
        self.preset: Any = None  # set by presets.build_model (a Preset; plain attribute, not in state_dict)
        self.video_heads = make_heads(self.num_heads, self.feat_dim_v, self.num_clusters, head_layers)
        self.audio_heads = make_heads(self.num_heads, self.feat_dim_a, self.num_clusters, head_layers)
        self.fusion = bool(fusion)
        if self.fusion:
            self.fused_heads = make_heads(self.num_heads, self.feat_dim_v + self.feat_dim_a, self.num_clusters,
                                          head_layers)

    # -- encoders ---------------------------------------------------------------------------
    def encode_video(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,3,T,H,W] -> [B, feat_dim_v]``."""
        return self.video_encoder(x)

    def encode_audio(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,1,F,T] -> [B, feat_dim_a]``."""
        return self.audio_encoder(x)

    # -- heads ------------------------------------------------------------------------------
    def heads(self, modality: str) -> nn.ModuleList:
        return self.video_heads if _modality(modality) == "video" else self.audio_heads

    def heads_forward(self, features: torch.Tensor, modality: str) -> torch.Tensor:
        """Logits of every head of ``modality`` on encoder features: ``[H, B, K]`` float32."""
        return stack_heads(self.heads(modality), features)

    def fused_forward(self, features_v: torch.Tensor, features_a: torch.Tensor) -> torch.Tensor:
        """Logits of every fusion head on ``[f_v; f_a]``: ``[H, B, K]`` float32 (``fusion=True`` only)."""
        if not self.fusion:
            raise ValueError("this SeLaVi has no fusion heads (built with fusion=False)")
        return stack_heads(self.fused_heads, torch.cat([features_v, features_a], dim=1))

    def last_linear(self, modality: str, h: int) -> nn.Linear:
        """The last ``nn.Linear`` (``K x d``) of head ``h`` of ``modality``."""
        fc2 = self.heads(modality)[h].fc2
        assert isinstance(fc2, nn.Linear)
        return fc2

    # -- forward ----------------------------------------------------------------------------
    def forward(self, video: torch.Tensor | None = None, audio: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if video is None and audio is None:
            raise ValueError("SeLaVi.forward needs video, audio or both")
        out: dict[str, torch.Tensor] = {}
        if self.fusion:
            if video is None or audio is None:
                raise ValueError("a fusion SeLaVi needs both video and audio")
            out["fused_logits"] = self.fused_forward(self.encode_video(video), self.encode_audio(audio))
            return out
        if video is not None:
            out["video_logits"] = self.heads_forward(self.encode_video(video), "video")
        if audio is not None:
            out["audio_logits"] = self.heads_forward(self.encode_audio(audio), "audio")
        return out

    def to_channels_last(self) -> "SeLaVi":
        """channels_last_3d for 5D conv weights, channels_last for 4D ones, in both towers (in place).

        ``Module.to(memory_format=...)`` cannot be used: one format fails on the other rank's weights
        (the ``tiny`` video tower has 2D convolutions, the paper's 3D ones).
        """
        for module in (self.video_encoder, self.audio_encoder):
            for param in module.parameters():  # 5D conv weights (3D convs) and 4D ones (per-frame 2D convs)
                if param.dim() == 5:
                    param.data = param.data.contiguous(memory_format=torch.channels_last_3d)
                elif param.dim() == 4:
                    param.data = param.data.contiguous(memory_format=torch.channels_last)
        return self
