"""Batch augmentations on the training device (pure torch, vectorised over the batch).

Input contract (the cache reader, moved to the device): video ``uint8 [B, T, H, W, 3]`` and audio
``float16 [B, n_mels, mel_frames]`` holding ``log(mel_power + 1e-6)``.

:class:`VideoAugment` -> ``float [B, 3, T', crop, crop]``:
  1. temporal subsample to ``preset.video_frames`` evenly spaced frames (train: random offset per
     clip; frames are repeated when the stored clip is shorter);
  2. optional ``degrade=F``: nearest down- then up-sampling of the stored frames by F (paper Fig. 2);
  3. spatial: train - short side to ``s ~ U[scale_jitter]``, random ``crop x crop`` square, flip
     with p=0.5; eval - short side to ``video_short_side``, centre crop. Implemented as one
     per-clip square box of ``short * crop / s`` stored pixels resampled to ``crop x crop`` by
     ``torchvision.ops.roi_align`` (bilinear; 2 x 2 samples averaged per output pixel when the box
     is at least twice the crop, a cheap anti-aliasing). One flat ``index_select`` on the uint8
     frames first cuts the chosen frames and a window around each box (temporal subsample and
     ``degrade`` fold into its indices), so only that window is converted to float. With
     ``view="full"`` the box is the same fraction of each side instead of a square of the short
     side: the whole stored frame is seen, squeezed to the square (an object near the edge of a
     wide or tall frame is not cut away);
  4. ``/255``; train: brightness/contrast jitter; optional ``gray`` (luminance in all 3 channels);
     optional ``polarity="skew"`` (train and eval): a clip whose luminance is negatively skewed is reversed,
     ``x -> 1 - x``, so that a subject lighter or darker than its background comes out the same way
     (:func:`luminance_skewness`); train: polarity reversal with probability ``invert_p``; then fixed or
     per-clip z-normalisation;
  5. train: optional ``blur=S``: a separable Gaussian blur of each clip's frames, sigma ``~ U[0, S]``
     model-input pixels per clip (:func:`gaussian_blur`); then optional ``noise=N``: i.i.d. Gaussian noise
     of standard deviation ``~ U[0, N]`` per clip, in units of the normalised input. Together with a wide
     ``scale_jitter`` they make the sharpness, the grain and the size of a source's pictures (its camera,
     codec and frame size) vary within each video, so that they cannot carry its label (not in the paper);
     optional channels_last_3d memory format.

:class:`AudioAugment` -> ``float [B, 1, F', T']``:
  1. train: volume jitter, ``+ 2 log g``, ``g ~ U(volume)`` per clip (the waveform gain in the log
     domain);
  2. floor: ``logaddexp(x, log(log_floor))`` turns stored ``log(mel + 1e-6)`` into
     ``log(mel + log_floor)`` (method.md "speaker shortcut"); ``log_floor <= 1e-6`` disables it;
     with ``level="auto"`` (train and eval) each spectrogram's peak is moved to one level first and each
     band's floor raised to its own background noise (:func:`level_and_noise_floor`); ``level="video"`` (one gain
     for the collection, each video's floor raised to its background) is applied before this class
     (:mod:`videolabel.data.levels`), and is the fixed floor here;
  3. average-pool to ``preset.audio_mels x preset.audio_frames`` when the stored size differs;
  4. normalisation, ``norm``:
       * ``"fixed"`` (default): ``(x - log(floor)) / norm_scale`` with fixed constants, so silence
         (at the floor) is exactly 0 and the level of a clip is kept (the volume jitter matters);
         ``floor = max(log_floor, 1e-6)``, ``norm_scale = 4`` (log-mel powers of speech-level
         audio above a floor of 1 span roughly 0..10 nats);
       * ``"sample"``: per-clip zero mean / unit variance over all bins;
       * ``"none"``: no normalisation (tests, inspection);
  5. train: SpecAugment, ``freq_masks`` bands of width ``U{0..freq_width}`` and ``time_masks`` of
     width ``U{0..time_width}`` set to ``mask_value`` (0 = silence under ``"fixed"``); widths < 1
     are fractions of the model-side size;
  6. train: optional ``warp``: frequency and time stretched by per-clip factors in ``[1 - w, 1 + w]``
     (:func:`warp_spectrogram`);
  7. a channel dimension.

Randomness comes only from ``generator`` (drawn where the generator lives, then moved to the data's
device), so a seeded generator gives identical output on every call order and device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from videolabel.ingest.levelstats import EMPTY_BIN
from videolabel.models.presets import Preset, get_preset

__all__ = ["LEVELS", "POLARITIES", "AudioAugment", "VideoAugment", "gaussian_blur", "gaussian_kernels",
           "level_and_noise_floor", "luminance_skewness", "temporal_indices", "warp_spectrogram"]

#: ``AudioAugment(level=...)``: the stored levels with a fixed floor, or each spectrogram's own level and noise floor
LEVELS = ("fixed", "auto", "video")
#: ``VideoAugment(polarity=...)``: keep the pictures' polarity, or set it by the sign of their skewness
POLARITIES = ("keep", "skew")

#: A generator for the batch, one generator per sample, or None (the global CPU generator).
Randomness = torch.Generator | Sequence[torch.Generator] | None


def _rand(n: int | tuple[int, ...], generator: "Randomness", device: torch.device) -> torch.Tensor:
    """U[0,1) float64 on the generator's device, moved to ``device``.

    ``generator`` may also be a sequence of generators, one per sample (the first dimension): each
    sample's numbers then come from its own generator, so a sample's augmentation does not depend on
    which batch it is in (label passes split across processes stay identical to one process)."""
    shape = (n,) if isinstance(n, int) else n
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for {shape[0]} samples")
        rows = [torch.rand(shape[1:], generator=g, device=g.device, dtype=torch.float64).cpu() for g in generator]
        return torch.stack(rows).to(device) if rows else torch.empty(shape, dtype=torch.float64, device=device)
    gen = cast("torch.Generator | None", generator)  # not a list or tuple of generators
    src = gen.device if gen is not None else torch.device("cpu")
    return torch.rand(shape, generator=gen, device=src, dtype=torch.float64).to(device)


def temporal_indices(
    stored: int, wanted: int, batch: int, offsets: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """Evenly spaced frame indices ``[batch, wanted]`` into a clip of ``stored`` frames.

    Frame i is ``floor(o + i * stored / wanted)``; ``offsets`` in [0, 1) (per clip) scale ``o``
    over one stride; ``None`` centres it (``o = stride / 2``).
    """
    stride = stored / wanted
    base = torch.arange(wanted, device=device, dtype=torch.float64) * stride
    if offsets is None:
        off = torch.full((batch, 1), 0.5 * stride, device=device, dtype=torch.float64)
    else:
        off = offsets.reshape(batch, 1) * stride
    return torch.floor(base + off).long().clamp_(0, stored - 1)


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels ``[B, 2 * radius + 1]``, one per ``sigma [B]`` (pixels); a sigma of 0 is
    the identity (a unit impulse). Pure."""
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    s = sigma.to(torch.float32).reshape(-1, 1)
    k = torch.exp(-0.5 * (t.reshape(1, -1) / s.clamp(min=1e-6)) ** 2)
    k = torch.where(s > 0, k, (t.reshape(1, -1) == 0).to(torch.float32))
    return k / k.sum(dim=1, keepdim=True)


def _luminance(x: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luminance ``0.299 R + 0.587 G + 0.114 B`` of ``x [B, T, 3, H, W]`` -> ``[B, T, 1, H, W]``, in
    ``x``'s dtype."""
    w = torch.tensor((0.299, 0.587, 0.114), device=x.device, dtype=x.dtype).reshape(1, 1, 3, 1, 1)
    return (x * w).sum(dim=2, keepdim=True)


def luminance_skewness(x: torch.Tensor) -> torch.Tensor:
    """The skewness ``E[(l - mean)^3] / std^3`` of each clip's luminance ``l = 0.299 R + 0.587 G + 0.114 B``
    (ITU-R BT.601) over all its frames and pixels; ``x [B, T, 3, H, W]`` -> ``[B]`` (float32). Pure.

    A small subject over a plainer background makes a long tail on the subject's side: the skewness is
    positive when the subject is lighter than the background, negative when it is darker, whatever the
    colours. A flat clip (no variance) has skewness 0."""
    lum = _luminance(x.to(torch.float32)).reshape(x.shape[0], -1)
    d = lum - lum.mean(dim=1, keepdim=True)
    m2 = d.square().mean(dim=1)
    m3 = d.pow(3).mean(dim=1)
    return torch.where(m2 > 1e-12, m3 / m2.clamp(min=1e-12).pow(1.5), torch.zeros_like(m3))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Blur each sample of ``x [B, ..., H, W]`` by its own separable Gaussian of ``sigma [B]`` pixels,
    truncated at ``radius`` pixels, edges replicated. Pure; a sigma of 0 returns the sample unchanged."""
    B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
    per = x[0].numel() // (H * W)  # planes per sample
    k = gaussian_kernels(sigma, radius).to(x.dtype).repeat_interleave(per, dim=0)  # [B * per, 2r + 1]
    y = F.pad(x.reshape(1, B * per, H, W), (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, k.reshape(B * per, 1, 1, -1), groups=B * per)  # along W
    y = F.conv2d(y, k.reshape(B * per, 1, -1, 1), groups=B * per)  # along H
    return y.reshape(x.shape)


class VideoAugment:
    """``uint8 [B,T,H,W,3] -> float [B,3,T',crop,crop]`` (see the module docstring)."""

    def __init__(
        self,
        preset: str | Preset,
        train: bool,
        mean: Sequence[float] = (0.45, 0.45, 0.45),
        std: Sequence[float] = (0.225, 0.225, 0.225),
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        degrade: int = 1,
        flip_p: float = 0.5,
        color_jitter: float = 0.0,
        norm: str = "fixed",
        view: str = "square",
        gray: bool = False,
        invert_p: float = 0.0,
        blur: float = 0.0,
        noise: float = 0.0,
        polarity: str = "keep",
    ) -> None:
        self.preset = get_preset(preset)
        self.train = bool(train)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need 3 values (RGB)")
        self.channels_last = bool(channels_last)
        self.dtype = dtype
        self.degrade = int(degrade)
        if self.degrade < 1:
            raise ValueError(f"degrade must be >= 1, got {degrade}")
        self.flip_p = float(flip_p)
        # training only: brightness and contrast factors ~ U[1 - j, 1 + j] per clip, so that a global
        # illumination level (a nuisance) cannot carry a video's label across augmentations
        self.color_jitter = float(color_jitter)
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"color_jitter must be in [0, 1), got {color_jitter}")
        # "fixed": (x - mean) / std with the given statistics (paper); "clip": each clip standardised
        # by its own mean and std over all its pixels and channels (removes brightness and contrast)
        if norm not in ("fixed", "clip"):
            raise ValueError(f"norm must be 'fixed' or 'clip', got {norm!r}")
        self.norm = norm
        # "square": a square box of the short side (paper: short side resized, square crop); "full": a
        # box of the same fraction of each side, so the whole stored frame is seen (squeezed to a square)
        if view not in ("square", "full"):
            raise ValueError(f"view must be 'square' or 'full', got {view!r}")
        self.view = view
        # luminance only (ITU-R BT.601 weights, copied to the 3 channels): the ink and paper colours of a
        # source cannot carry its label
        self.gray = bool(gray)
        # training only: the clip's polarity is reversed (x -> 1 - x) with this probability, so that dark on
        # light and light on dark are the same thing to the tower
        self.invert_p = float(invert_p)
        if not 0.0 <= self.invert_p <= 1.0:
            raise ValueError(f"invert_p must be in [0, 1], got {invert_p}")
        # "keep": the pictures' own polarity; "skew" (training and inference alike): a clip whose luminance is
        # negatively skewed (its minority of pixels, the subject over a plainer background, darker than the
        # rest) is reversed, so that dark ink on light paper and light ink on dark paper look the same
        if polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {', '.join(POLARITIES)}, got {polarity!r}")
        self.polarity = polarity
        # training only: per clip, a Gaussian blur of sigma ~ U[0, blur] model-input pixels and additive noise
        # of std ~ U[0, noise] (normalised units), so that a source's sharpness and grain do not identify it
        self.blur = float(blur)
        self.noise = float(noise)
        if not 0.0 <= self.blur <= 8.0:
            raise ValueError(f"blur must be in [0, 8], got {blur}")
        if self.noise < 0.0:
            raise ValueError(f"noise must be >= 0, got {noise}")

    def __repr__(self) -> str:
        return (
            f"VideoAugment(preset={self.preset.name}, train={self.train}, degrade={self.degrade}, "
            f"channels_last={self.channels_last}, dtype={self.dtype})"
        )

    def __call__(self, video: torch.Tensor, generator: Randomness = None) -> torch.Tensor:
        if video.dim() != 5 or video.shape[-1] != 3:
            raise ValueError(f"video must be [B,T,H,W,3], got {tuple(video.shape)}")
        p = self.preset
        B, T, H, W, _ = video.shape
        dev = video.device
        Tn, crop = p.video_frames, p.video_crop
        # all random numbers first, in a fixed order: [time offset, scale, x, y, flip]
        u = cast(torch.Tensor, _rand((B, 5), generator, dev) if self.train else None)  # read only when training

        # 1. spatial: one square box per clip, in stored pixel coordinates
        short = float(min(H, W))
        if self.train:
            a, b = p.scale_jitter
            s = a + (b - a) * u[:, 1]
            s_min = float(a)
        else:
            s = torch.full((B,), float(p.video_short_side), device=dev, dtype=torch.float64)
            s_min = float(p.video_short_side)
        if self.view == "square":
            side_w = side_h = torch.clamp(short * crop / s, max=short)
            max_w = max_h = min(short, short * crop / s_min)
        else:  # "full": the same fraction of each side
            side_w, side_h = torch.clamp(W * crop / s, max=float(W)), torch.clamp(H * crop / s, max=float(H))
            max_w, max_h = min(float(W), W * crop / s_min), min(float(H), H * crop / s_min)
        if self.train:
            x0 = (W - side_w) * u[:, 2]
            y0 = (H - side_h) * u[:, 3]
        else:
            x0 = (W - side_w) / 2
            y0 = (H - side_h) / 2

        # 2. one gather cuts, in uint8, the frames (temporal subsample) and a window holding each
        #    box with the pixels bilinear sampling touches; ``degrade`` folds in as nearest indices
        max_side = max(max_w, max_h)
        sh, sw = min(H, math.ceil(max_h) + 3), min(W, math.ceil(max_w) + 3)
        wy0 = torch.clamp(torch.floor(y0 - 0.5), min=0).long().clamp(max=H - sh)
        wx0 = torch.clamp(torch.floor(x0 - 0.5), min=0).long().clamp(max=W - sw)
        tidx = temporal_indices(T, Tn, B, None if u is None else u[:, 0], dev)  # [B, Tn]
        rows = wy0[:, None] + torch.arange(sh, device=dev)  # [B, sh]
        cols = wx0[:, None] + torch.arange(sw, device=dev)  # [B, sw]
        if self.degrade > 1:  # nearest down- then up-sampling by F, blocks anchored at (0, 0)
            rows = torch.div(rows, self.degrade, rounding_mode="floor") * self.degrade
            cols = torch.div(cols, self.degrade, rounding_mode="floor") * self.degrade
        bi = torch.arange(B, device=dev).reshape(B, 1, 1, 1)
        lin = ((bi * T + tidx.reshape(B, Tn, 1, 1)) * H + rows.reshape(B, 1, sh, 1)) * W + cols.reshape(B, 1, 1, sw)
        win = video.contiguous().reshape(-1, 3).index_select(0, lin.reshape(-1))  # [B*Tn*sh*sw, 3]
        frames = win.reshape(B * Tn, sh, sw, 3).permute(0, 3, 1, 2).float()  # [B*Tn, 3, sh, sw]

        # 3. resample each box to crop x crop (bilinear, up to 2 x 2 samples per output pixel)
        bx0 = (x0 - wx0).repeat_interleave(Tn)
        by0 = (y0 - wy0).repeat_interleave(Tn)
        bside_w, bside_h = side_w.repeat_interleave(Tn), side_h.repeat_interleave(Tn)
        boxes = torch.stack(
            [torch.arange(B * Tn, device=dev, dtype=torch.float64), bx0, by0, bx0 + bside_w, by0 + bside_h], dim=1
        ).to(frames.dtype)  # [B*Tn, 5]: frame index, x1, y1, x2, y2
        ratio = max(1, min(2, math.ceil(max_side / crop)))
        out = roi_align(frames, boxes, output_size=(crop, crop), spatial_scale=1.0, sampling_ratio=ratio, aligned=True)
        out = out.reshape(B, Tn, 3, crop, crop)

        if self.train and self.flip_p > 0:
            flip = (u[:, 4] < self.flip_p).reshape(B, 1, 1, 1, 1)
            out = torch.where(flip, out.flip(-1), out)

        # 4. colour jitter (train): contrast around the clip mean, then brightness
        out = out * (1.0 / 255.0)
        if self.train and self.color_jitter > 0:
            j = self.color_jitter
            v = _rand((B, 2), generator, dev).to(torch.float32)  # drawn after [B,5]: old seeds unchanged
            contrast = (1 - j + 2 * j * v[:, 0]).reshape(B, 1, 1, 1, 1)
            bright = (1 - j + 2 * j * v[:, 1]).reshape(B, 1, 1, 1, 1)
            m = out.mean(dim=(1, 2, 3, 4), keepdim=True)
            out = ((out - m) * contrast + m) * bright

        if self.gray:
            out = _luminance(out).expand(B, Tn, 3, crop, crop)
        if self.polarity == "skew":
            rev = luminance_skewness(out) < 0
            out = torch.where(rev.reshape(B, 1, 1, 1, 1), 1.0 - out, out)
        if self.train and self.invert_p > 0:
            f = _rand((B,), generator, dev).to(out.dtype) < self.invert_p  # drawn last: old seeds unchanged
            out = torch.where(f.reshape(B, 1, 1, 1, 1), 1.0 - out, out)

        # 5. normalise: (x - mean) / std, fixed statistics or the clip's own
        if self.norm == "clip":
            m = out.mean(dim=(1, 2, 3, 4), keepdim=True)
            sd = out.std(dim=(1, 2, 3, 4), keepdim=True)
            out = (out - m) / (sd + 1e-3)
        else:
            mean = torch.tensor(self.mean, device=dev, dtype=torch.float32).reshape(1, 1, 3, 1, 1)
            std = torch.tensor(self.std, device=dev, dtype=torch.float32).reshape(1, 1, 3, 1, 1)
            out = (out - mean) / std

        # 6. blur, then noise (train); drawn after everything above: old seeds unchanged when both are off
        if self.train and (self.blur > 0 or self.noise > 0):
            w = _rand((B, 2), generator, dev).to(torch.float32)
            if self.blur > 0:
                out = gaussian_blur(out, w[:, 0] * self.blur, max(1, math.ceil(2.5 * self.blur)))
            if self.noise > 0:
                z = _rand((B, Tn, 3, crop, crop), generator, dev).clamp_(1e-7, 1 - 1e-7)
                z = (math.sqrt(2.0) * torch.erfinv(2.0 * z - 1.0)).to(out.dtype)  # standard normal
                out = out + z * (w[:, 1] * self.noise).reshape(B, 1, 1, 1, 1)
        out = out.permute(0, 2, 1, 3, 4)  # [B,3,Tn,crop,crop]
        fmt = torch.channels_last_3d if self.channels_last else torch.contiguous_format
        return out.to(dtype=self.dtype).contiguous(memory_format=fmt)


def warp_spectrogram(x: torch.Tensor, u: torch.Tensor, warp: float) -> torch.Tensor:
    """Stretch each spectrogram ``x [B, F, T]`` along frequency and time (bilinear).

    ``u [B, 2]`` in [0, 1) gives the factors ``a = 1 - warp + 2 warp u[:, 0]`` (frequency) and ``b``
    (time, from ``u[:, 1]``): output band ``f`` reads input band ``f / a`` (the lowest band stays put,
    so ``a > 1`` moves energy up, as a shorter vocal tract does) and output frame ``t`` reads input
    frame ``c + (t - c) / b`` about the centre ``c``. Points outside the input read 0 (silence under
    the ``"fixed"`` normalisation)."""
    B, Fm, Tm = x.shape
    dev = x.device
    uf = u.to(device=dev, dtype=torch.float32)
    a = (1.0 - warp + 2.0 * warp * uf[:, 0]).reshape(B, 1)
    b = (1.0 - warp + 2.0 * warp * uf[:, 1]).reshape(B, 1)
    src_f = torch.arange(Fm, device=dev, dtype=torch.float32).reshape(1, Fm) / a  # [B, F]
    c = (Tm - 1) / 2.0
    src_t = c + (torch.arange(Tm, device=dev, dtype=torch.float32).reshape(1, Tm) - c) / b  # [B, T]
    # grid_sample's coordinates, align_corners=True: -1 and 1 are the centres of the first and last bins
    gy = (2.0 * src_f / max(Fm - 1, 1) - 1.0).reshape(B, Fm, 1).expand(B, Fm, Tm)
    gx = (2.0 * src_t / max(Tm - 1, 1) - 1.0).reshape(B, 1, Tm).expand(B, Fm, Tm)
    grid = torch.stack([gx, gy], dim=-1)
    out = F.grid_sample(x.unsqueeze(1).float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.squeeze(1).to(x.dtype)


#: ``level_and_noise_floor``: a band's floor sits this far (3 dB) above its background estimate
NOISE_MARGIN = math.log(2.0)


def level_and_noise_floor(x: torch.Tensor, floor: float, peak: float = 6.0, quantile: float = 0.5,
                          margin: float = NOISE_MARGIN, empty: float = EMPTY_BIN) -> torch.Tensor:
    """Automatic level and noise floor of log-mel spectrograms ``x [B, F, T]`` (``log(mel + 1e-6)``). Pure.

    1. Level: each spectrogram is shifted so that its loudest bin sits at ``peak`` (a gain on the waveform:
       the recording level no longer shows).
    2. Noise floor: per band, the ``quantile`` of its level over the frames that hold sound (bins at the
       stored epsilon, ``<= empty``, are padding or digital silence and are left out) estimates the steady
       background; the band's floor is ``c = max(floor, that + margin)``, and the band becomes
       ``logaddexp(x, c) - c + floor``: what lies under the background reads as silence (``floor``), the rest
       as its level above the background. With clean audio (background under ``floor``) this is the fixed
       floor of the paper's inputs, ``logaddexp(x, floor)``, after the level shift.
    Not in the paper; ``docs/method.md``, "Low-resolution handwriting, sound levels and colour"."""
    xf = x.float()
    top = xf.amax(dim=(1, 2), keepdim=True)
    has = top > empty  # an all-silent spectrogram keeps its level
    shifted = torch.where(has, xf + (peak - top), xf)
    valid = xf > empty
    bg = torch.nanquantile(torch.where(valid, shifted, torch.full_like(shifted, float("nan"))), quantile, dim=2,
                           keepdim=True)  # [B, F, 1]; NaN where a band holds no sound at all
    c = torch.clamp(torch.nan_to_num(bg + margin, nan=floor), min=floor)
    return torch.logaddexp(shifted, c) - c + floor


def _width(spec: float, size: int) -> int:
    return int(round(spec * size)) if spec < 1 else int(spec)


class AudioAugment:
    """``[B,F,T] log(mel + 1e-6) -> float [B,1,F',T']`` (see the module docstring)."""

    def __init__(
        self,
        preset: str | Preset,
        train: bool,
        log_floor: float = 1.0,
        volume: tuple[float, float] | None = (0.9, 1.1),
        specaugment: bool | None = None,
        freq_masks: int = 2,
        freq_width: float = 1 / 8,
        time_masks: int = 2,
        time_width: float = 1 / 8,
        mask_value: float = 0.0,
        norm: str = "fixed",
        norm_scale: float = 4.0,
        time_shift: float = 0.0,
        warp: float = 0.0,
        dtype: torch.dtype = torch.float32,
        level: str = "fixed",
    ) -> None:
        self.preset = get_preset(preset)
        self.train = bool(train)
        self.log_floor = float(log_floor)
        # "fixed": the stored levels (the floor at ``log_floor``); "auto": each spectrogram's loudest bin moved to
        # one level and its floor raised, band by band, to its own noise level (:func:`level_and_noise_floor`),
        # so that neither the recording level nor a steady background noise can tell videos apart; "video": one gain for
        # the collection and each video's floor from all its clips, applied before this class (data/levels.py)
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
        self.level = level
        self.volume = None if volume is None else (float(volume[0]), float(volume[1]))
        if self.volume is not None and not (0 < self.volume[0] <= self.volume[1]):
            raise ValueError(f"volume range must be positive and increasing, got {volume}")
        self.specaugment = self.train if specaugment is None else bool(specaugment)
        self.freq_masks, self.freq_width = int(freq_masks), float(freq_width)
        self.time_masks, self.time_width = int(time_masks), float(time_width)
        self.mask_value = float(mask_value)
        if norm not in ("fixed", "sample", "none"):
            raise ValueError(f"norm must be 'fixed', 'sample' or 'none', got {norm!r}")
        self.norm = norm
        self.norm_scale = float(norm_scale)
        # training only: each spectrogram's frequency axis (from its lowest band) and time axis (about
        # its centre) are stretched by factors ~ U[1 - warp, 1 + warp], a vocal-tract-length and tempo
        # perturbation: a voice's formants and pace no longer identify it exactly (not in the paper)
        self.warp = float(warp)
        if not 0.0 <= self.warp < 1.0:
            raise ValueError(f"warp must be in [0, 1), got {warp}")
        # training only: circular shift along time by up to this fraction of the frames, per clip, so
        # that when something is said in the window cannot identify a video (its content still can)
        self.time_shift = float(time_shift)
        if not 0.0 <= self.time_shift <= 1.0:
            raise ValueError(f"time_shift must be in [0, 1], got {time_shift}")
        self.dtype = dtype

    @property
    def floor_enabled(self) -> bool:
        return self.log_floor > 1e-6

    @property
    def norm_center(self) -> float:
        """The value silence takes after the floor: ``log(max(log_floor, 1e-6))``."""
        return math.log(max(self.log_floor, 1e-6))

    def __repr__(self) -> str:
        return (
            f"AudioAugment(preset={self.preset.name}, train={self.train}, log_floor={self.log_floor}, "
            f"volume={self.volume if self.train else None}, specaugment={self.specaugment}, norm={self.norm})"
        )

    def __call__(self, audio: torch.Tensor, generator: Randomness = None) -> torch.Tensor:
        if audio.dim() != 3:
            raise ValueError(f"audio must be [B, n_mels, frames], got {tuple(audio.shape)}")
        p = self.preset
        B = audio.shape[0]
        dev = audio.device
        x = audio.float()

        # 1. volume jitter: gain g on the waveform = + 2 log g on the log power
        if self.train and self.volume is not None:
            lo, hi = self.volume
            g = lo + (hi - lo) * _rand(B, generator, dev)
            x = x + (2.0 * torch.log(g)).float().reshape(B, 1, 1)

        # 1b. time shift (train): roll each spectrogram by its own offset; drawn after the volume
        if self.train and self.time_shift > 0:
            T = x.shape[-1]
            span = int(round(self.time_shift * T))
            off = torch.floor(_rand(B, generator, dev) * (2 * span + 1)).long() - span  # U{-span..span}
            idx = (torch.arange(T, device=dev).reshape(1, T) - off.reshape(B, 1)) % T
            x = torch.gather(x, 2, idx.reshape(B, 1, T).expand(B, x.shape[1], T))

        # 2. floor: log(mel + eps) -> log(mel + eps + floor)
        if self.level == "auto":
            x = level_and_noise_floor(x, self.norm_center)
        elif self.floor_enabled:
            x = torch.logaddexp(x, torch.tensor(math.log(self.log_floor), device=dev))

        # 3. model-side size
        size = (p.audio_mels, p.audio_frames)
        if tuple(x.shape[1:]) != size:
            x = F.adaptive_avg_pool2d(x.unsqueeze(1), size).squeeze(1)

        # 4. normalisation
        if self.norm == "fixed":
            x = (x - self.norm_center) / self.norm_scale
        elif self.norm == "sample":
            m = x.mean(dim=(1, 2), keepdim=True)
            sd = x.std(dim=(1, 2), keepdim=True)
            x = (x - m) / (sd + 1e-5)

        # 5. SpecAugment
        if self.specaugment:
            Fm, Tm = size
            mask = torch.zeros(B, Fm, Tm, dtype=torch.bool, device=dev)
            if self.freq_masks > 0:
                mask |= self._masks(B, Fm, self.freq_masks, _width(self.freq_width, Fm), generator, dev)[:, :, None]
            if self.time_masks > 0:
                mask |= self._masks(B, Tm, self.time_masks, _width(self.time_width, Tm), generator, dev)[:, None, :]
            x = x.masked_fill(mask, self.mask_value)

        # 6. warp (train): frequency and time scaled by their own factors ~ U[1 - w, 1 + w] per clip
        if self.train and self.warp > 0:
            x = warp_spectrogram(x, _rand((B, 2), generator, dev), self.warp)

        return x.unsqueeze(1).to(self.dtype).contiguous()

    @staticmethod
    def _masks(
        B: int, size: int, n: int, max_width: int, generator: Randomness, dev: torch.device
    ) -> torch.Tensor:
        """``[B, size]`` bool: union of ``n`` intervals of width ``U{0..max_width}`` per clip."""
        max_width = max(0, min(max_width, size))
        u = _rand((B, n, 2), generator, dev)
        width = torch.floor(u[..., 0] * (max_width + 1)).long()  # U{0..max_width}
        start = torch.floor(u[..., 1] * (size - width + 1)).long()  # U{0..size-width}
        pos = torch.arange(size, device=dev).reshape(1, 1, size)
        inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])
        return inside.any(dim=1)
