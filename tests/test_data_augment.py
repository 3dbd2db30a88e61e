"""Batch augmentations: geometry, flips, normalisation, degrade, floor, volume, SpecAugment, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from videolabel.data.augment import AudioAugment, VideoAugment, temporal_indices
from videolabel.models import PRESETS

TINY = PRESETS["tiny"]
# crop 32 from a 64-short-side frame at evaluation: the box is 32 stored pixels, 1:1
SMALL = TINY.replace(name="small", video_frames=4, video_crop=32, video_short_side=64, scale_jitter=(40, 64))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _video(b=2, t=8, h=64, w=86, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (b, t, h, w, 3), dtype=torch.uint8, generator=_gen(seed))


def _identity(v: torch.Tensor, mean=0.0, std=1.0) -> torch.Tensor:
    """Undo the normalisation: back to [0, 255], [B,T,H,W,3]."""
    return ((v * std + mean) * 255).permute(0, 2, 3, 4, 1)


# -- video ----------------------------------------------------------------------------------
def test_video_shapes_and_dtype_tiny_and_paper():
    v = _video(2, 30, 128, 171)
    for preset in ("tiny", "paper"):
        p = PRESETS[preset]
        for train in (True, False):
            out = VideoAugment(preset, train)(v, _gen(1))
            assert out.shape == (2, 3, p.video_frames, p.video_crop, p.video_crop)
            assert out.dtype == torch.float32
    out = VideoAugment("tiny", True, channels_last=True, dtype=torch.bfloat16)(v, _gen(1))
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last_3d)


def test_eval_centre_crop_keeps_centre_pixel():
    v = torch.zeros(1, 4, 64, 86, 3, dtype=torch.uint8)
    v[:, :, 32, 43] = 255  # the pixel just below-right of the geometric centre
    v[:, :, 0, 0] = 255  # outside the crop
    out = VideoAugment(SMALL, train=False, mean=(0, 0, 0), std=(1, 1, 1))(v)
    assert out.shape == (1, 3, 4, 32, 32)
    img = out[0, 0, 0]
    assert img[16, 16] == pytest.approx(1.0)  # box = rows 16..47, cols 27..58 of the stored frame
    assert img.sum() == pytest.approx(1.0)  # 1:1 resampling: exactly one bright pixel, corner cut away


def test_eval_crop_matches_plain_slicing():
    v = _video(2, 4, 64, 86)
    out = VideoAugment(SMALL, train=False, mean=(0, 0, 0), std=(1, 1, 1))(v)
    expect = v[:, :, 16:48, 27:59].float() / 255
    torch.testing.assert_close(_identity(out) / 255, expect, rtol=0, atol=1e-5)


def test_flip_mirrors_same_crop():
    v = _video(3, 8, 64, 86)
    a = VideoAugment(SMALL, train=True, flip_p=0.0)(v, _gen(5))
    b = VideoAugment(SMALL, train=True, flip_p=1.0)(v, _gen(5))
    torch.testing.assert_close(b, a.flip(-1))
    # p=0.5: with 64 clips some are flipped and some not
    v64 = v[:1].expand(64, -1, -1, -1, -1).contiguous()
    ref = VideoAugment(SMALL, train=True, flip_p=0.0)(v64, _gen(7))
    mix = VideoAugment(SMALL, train=True)(v64, _gen(7))
    same = [(torch.allclose(mix[i], ref[i])) for i in range(64)]
    assert 10 < sum(same) < 54
    assert all(same[i] or torch.allclose(mix[i], ref[i].flip(-1)) for i in range(64))


def test_normalisation_constant_frame():
    v = torch.full((2, 8, 64, 86, 3), round(0.45 * 255), dtype=torch.uint8)
    for train in (True, False):
        out = VideoAugment(SMALL, train=train)(v, _gen(0))
        assert out.abs().max() < 0.01
    v[..., 1] = 255
    out = VideoAugment(SMALL, train=False, std=(0.225, 0.5, 0.225))(v)
    assert out[:, 1].mean().item() == pytest.approx((1 - 0.45) / 0.5, abs=1e-4)


def test_degrade_makes_constant_blocks():
    p = SMALL.replace(video_crop=32, video_short_side=32, scale_jitter=(32, 32))
    v = _video(2, 4, 32, 32)
    plain = VideoAugment(p, train=False, mean=(0, 0, 0), std=(1, 1, 1))(v)
    torch.testing.assert_close(_identity(plain), v.float(), rtol=0, atol=1e-3)  # box = whole frame
    out = VideoAugment(p, train=False, degrade=4, mean=(0, 0, 0), std=(1, 1, 1))(v)
    blocks = out.reshape(2, 3, 4, 8, 4, 8, 4)  # [B,C,T,by,y,bx,x]
    assert (blocks - blocks[:, :, :, :, :1, :, :1]).abs().max() < 1e-5
    torch.testing.assert_close(out[..., ::4, ::4], plain[..., ::4, ::4])  # top-left pixel of each block kept
    assert not torch.allclose(out, plain)


def test_same_seed_same_output_different_seed_different_crops():
    v = _video(4, 30, 128, 171)
    aug = VideoAugment("tiny", train=True)
    torch.testing.assert_close(aug(v, _gen(3)), aug(v, _gen(3)), rtol=0, atol=0)
    assert not torch.allclose(aug(v, _gen(3)), aug(v, _gen(4)))
    ev = VideoAugment("tiny", train=False)
    torch.testing.assert_close(ev(v, _gen(3)), ev(v, _gen(4)), rtol=0, atol=0)  # eval ignores randomness


def test_train_crop_stays_in_frame_and_scales():
    # a frame whose value encodes the column: the crop's columns are a contiguous increasing range
    h, w = 64, 200
    col = torch.arange(w).clamp(max=255).to(torch.uint8)
    v = col.reshape(1, 1, 1, w, 1).expand(16, 4, h, w, 3).contiguous()
    out = VideoAugment(SMALL, train=True, flip_p=0.0, mean=(0, 0, 0), std=(1, 1, 1))(v, _gen(2))
    cols = (out[:, 0, 0, 0] * 255)  # [B, crop] stored column (interpolated) of each output column
    assert (cols >= 0).all() and (cols <= w - 1).all()
    assert (cols.diff(dim=1) > 0).all()
    span = cols[:, -1] - cols[:, 0]  # (box side) * (crop-1)/crop; box side = 64 * 32 / s, s in [40, 64]
    side = span * 32 / 31
    assert (side > 32 - 0.5).all() and (side < 64 * 32 / 40 + 0.5).all()
    assert side.max() - side.min() > 3  # scale jitter varies per clip
    assert cols[:, 0].max() - cols[:, 0].min() > 20  # position varies per clip


def test_temporal_subsample():
    idx = temporal_indices(30, 8, 1, None, torch.device("cpu"))
    assert idx.tolist() == [[1, 5, 9, 13, 16, 20, 24, 28]]
    v = torch.arange(30, dtype=torch.uint8).reshape(1, 30, 1, 1, 1).expand(6, 30, 56, 56, 3).contiguous()
    p = TINY.replace(video_frames=8, video_crop=56, video_short_side=56, scale_jitter=(56, 56))
    ev = VideoAugment(p, train=False, mean=(0, 0, 0), std=(1, 1, 1))(v)
    assert (ev[:, 0, :, 0, 0] * 255).round().tolist() == [[1, 5, 9, 13, 16, 20, 24, 28]] * 6
    tr = (VideoAugment(p, train=True, mean=(0, 0, 0), std=(1, 1, 1))(v, _gen(0))[:, 0, :, 0, 0] * 255).round()
    d = tr.diff(dim=1)
    assert ((d >= 3) & (d <= 4)).all() and (tr >= 0).all() and (tr <= 29).all()
    assert len({int(r[0]) for r in tr}) > 1  # random offsets per clip
    # a stored clip shorter than asked repeats frames
    short = VideoAugment(p, train=False, mean=(0, 0, 0), std=(1, 1, 1))(v[:, :4])
    assert (short[0, 0, :, 0, 0] * 255).round().tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_stored_smaller_than_crop_is_upsampled():
    out = VideoAugment("paper", train=True)(_video(2, 30, 32, 43), _gen(0))
    assert out.shape == (2, 3, 30, 112, 112)


# -- audio ----------------------------------------------------------------------------------
def _audio(b=4, f=257, t=199, seed=0) -> torch.Tensor:
    return (torch.randn(b, f, t, generator=_gen(seed)) * 3 - 4).half()


def test_audio_shapes():
    a = _audio()
    for preset in ("tiny", "paper"):
        p = PRESETS[preset]
        for train in (True, False):
            out = AudioAugment(preset, train)(a, _gen(0))
            assert out.shape == (4, 1, p.audio_mels, p.audio_frames) and out.dtype == torch.float32
            assert torch.isfinite(out).all()


def test_floor_lifts_quiet_bins():
    a = torch.full((2, 257, 199), math.log(1e-6), dtype=torch.float16)
    a[:, :10] = 5.0
    out = AudioAugment("paper", train=False, log_floor=1.0, norm="none")(a)
    assert out.min() >= 0.0  # log(1)
    assert out[:, 0, 20:].abs().max() < 1e-4  # silence -> log(1e-6 + 1)
    torch.testing.assert_close(out[:, 0, :10], torch.full_like(out[:, 0, :10], math.log(math.exp(5) + 1)))
    off = AudioAugment("paper", train=False, log_floor=1e-6, norm="none")(a)
    torch.testing.assert_close(off[:, 0], a.float())
    # fixed normalisation: silence -> 0
    fixed = AudioAugment("paper", train=False, log_floor=1.0)(a)
    assert fixed[:, 0, 20:].abs().max() < 1e-4 and fixed[:, 0, :10].min() > 1.0


def test_volume_jitter_is_constant_log_shift():
    a = _audio()
    aug = AudioAugment("paper", train=True, log_floor=0.0, specaugment=False, norm="none")
    out = aug(a, _gen(0))[:, 0]
    shift = out - a.float()
    per_clip = shift[:, :1, :1]
    assert (shift - per_clip).abs().max() < 1e-5
    assert (per_clip >= 2 * math.log(0.9) - 1e-5).all() and (per_clip <= 2 * math.log(1.1) + 1e-5).all()
    assert per_clip.flatten().unique().numel() == 4
    # exactly 2 log g for the g the generator gives first
    g = 0.9 + 0.2 * torch.rand(4, generator=_gen(0), dtype=torch.float64)
    torch.testing.assert_close(per_clip.flatten(), (2 * torch.log(g)).float(), rtol=0, atol=1e-5)


def test_specaugment_masks():
    a = _audio(32)
    aug = AudioAugment("tiny", train=True, volume=None, norm="none", mask_value=-99.0)
    out = aug(a, _gen(1))[:, 0]  # [B, 64, 100]
    m = out == -99.0
    band = m.all(dim=2)  # masked frequency bands (whole rows)
    frame = m.all(dim=1)  # masked time frames (whole columns)
    # every masked bin is in a masked band or frame
    assert torch.equal(m, band[:, :, None] | frame[:, None, :])
    assert (band.sum(1) <= 2 * 8).all() and (frame.sum(1) <= 2 * 12).all()  # 2 masks of <= 1/8 each
    assert band.any(1).float().mean() > 0.5 and frame.any(1).float().mean() > 0.5
    frac = m.float().mean().item()
    assert 0.05 < frac < 0.45
    # one mask per axis: at most one band and one span, each of <= 1/8, always a contiguous run
    one = AudioAugment("tiny", train=True, volume=None, norm="none", mask_value=-99.0, freq_masks=1, time_masks=1)
    m1 = one(a, _gen(1))[:, 0] == -99.0
    band1, frame1 = m1.all(dim=2), m1.all(dim=1)
    assert torch.equal(m1, band1[:, :, None] | frame1[:, None, :])
    assert (band1.sum(1) <= 8).all() and (frame1.sum(1) <= 12).all()
    for row in [*band1, *frame1]:
        idx = row.nonzero().flatten()
        assert len(idx) == 0 or int(idx[-1] - idx[0]) + 1 == len(idx)
    assert m1.float().mean().item() < frac
    # widths of zero are allowed: with no masks nothing changes
    nomask = AudioAugment("tiny", train=True, volume=None, norm="none", freq_masks=0, time_masks=0)(a, _gen(1))
    assert not (nomask == -99.0).any()


def test_audio_eval_deterministic_no_masks_and_seeds():
    a = _audio()
    ev = AudioAugment("tiny", train=False)
    x, y = ev(a, _gen(0)), ev(a, _gen(1))
    torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert not ev.specaugment
    tr = AudioAugment("tiny", train=True)
    torch.testing.assert_close(tr(a, _gen(2)), tr(a, _gen(2)), rtol=0, atol=0)
    assert not torch.allclose(tr(a, _gen(2)), tr(a, _gen(3)))


def test_audio_resize_and_sample_norm():
    a = _audio(2)
    x = AudioAugment("tiny", train=False, log_floor=0.0, norm="none")(a)
    # average pooling: the mean over all bins is (almost) preserved
    assert x.mean().item() == pytest.approx(a.float().mean().item(), abs=0.05)
    s = AudioAugment("tiny", train=False, norm="sample")(a)[:, 0]
    torch.testing.assert_close(s.mean(dim=(1, 2)), torch.zeros(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(s.std(dim=(1, 2)), torch.ones(2), atol=1e-3, rtol=0)
    with pytest.raises(ValueError):
        AudioAugment("tiny", train=False, norm="bogus")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    v, a = _video(2, 30, 128, 171), _audio(2)
    for train in (True, False):
        va, aa = VideoAugment("tiny", train), AudioAugment("tiny", train)
        cv, ca = va(v, _gen(0)), aa(a, _gen(0))
        gv, ga = va(v.cuda(), _gen(0)), aa(a.cuda(), _gen(0))
        torch.testing.assert_close(gv.cpu(), cv, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(ga.cpu(), ca, rtol=1e-4, atol=1e-3)


def test_audio_time_shift_rolls_each_clip():
    from videolabel.data.augment import AudioAugment

    x = torch.full((3, 257, 199), -13.8)
    x[:, :, 10] = 5.0  # one loud frame per clip
    aug = AudioAugment("paper", train=True, log_floor=0.0, volume=None, specaugment=False, norm="none",
                       time_shift=0.5)
    out = aug(x, torch.Generator().manual_seed(3))[:, 0]
    loud = out.mean(dim=1).argmax(dim=1)
    assert out.shape == (3, 257, 199)
    assert torch.allclose(out.sort(dim=2).values, x.sort(dim=2).values)  # a permutation of the frames
    assert len(set(loud.tolist())) > 1  # clips shifted by different amounts
    again = aug(x, torch.Generator().manual_seed(3))[:, 0]
    assert torch.equal(out, again)
    assert torch.equal(AudioAugment("paper", train=False, log_floor=0.0, norm="none", time_shift=0.5)(x)[:, 0], x)


def test_video_color_jitter_and_clip_norm():
    from videolabel.data.augment import VideoAugment

    g = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (4, 30, 128, 171, 3), dtype=torch.uint8, generator=g)
    dark = (video.float() * 0.3).to(torch.uint8)
    clip = VideoAugment("paper", train=False, norm="clip")
    a, b = clip(video), clip(dark)
    assert torch.allclose(a.mean(dim=(1, 2, 3, 4)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(a.std(dim=(1, 2, 3, 4)), torch.ones(4), atol=1e-2)
    assert (a - b).abs().mean() < 0.05  # brightness and contrast no longer tell the clips apart
    jit = VideoAugment("paper", train=True, color_jitter=0.4)
    plain = VideoAugment("paper", train=True)
    j, p = jit(video, torch.Generator().manual_seed(1)), plain(video, torch.Generator().manual_seed(1))
    assert j.shape == p.shape and not torch.allclose(j, p)
    with pytest.raises(ValueError):
        VideoAugment("paper", train=True, color_jitter=1.5)


def test_full_view_sees_the_whole_frame():
    # a wide frame (64 x 128): the square view's eval box is the centre 64 x 64, the full view's all of it
    v = torch.zeros(1, 4, 64, 128, 3, dtype=torch.uint8)
    v[:, :, 30:34, 0:6] = 255  # a mark at the left edge
    p = TINY.replace(name="edge", video_frames=2, video_crop=32, video_short_side=32, scale_jitter=(32, 36))
    square = VideoAugment(p, train=False, mean=(0, 0, 0), std=(1, 1, 1))(v)
    full = VideoAugment(p, train=False, mean=(0, 0, 0), std=(1, 1, 1), view="full")(v)
    assert square.shape == full.shape == (1, 3, 2, 32, 32)
    assert square.max() == 0  # the mark is cut away
    assert full[0, 0, 0, 15:17, 0].min() > 0.9  # rows 30..33 of 64 -> 15..16 of 32; cols 0..5 of 128 -> 0..1.5
    assert full[0, 0, 0, :, 4:].max() < 0.1  # nothing else is lit
    # training boxes stay in the frame and cover the same fraction of both sides
    out = VideoAugment(p, train=True, mean=(0, 0, 0), std=(1, 1, 1), view="full")(v, _gen(3))
    assert out.shape == (1, 3, 2, 32, 32) and 0 <= float(out.min()) and float(out.max()) <= 1 + 1e-5
    # on a square frame both views are the same box: the same output, bit for bit
    sq = _video(2, 8, 64, 64)
    for train in (False, True):
        a = VideoAugment(SMALL, train=train)(sq, _gen(5))
        b = VideoAugment(SMALL, train=train, view="full")(sq, _gen(5))
        assert torch.equal(a, b)
    with pytest.raises(ValueError):
        VideoAugment(SMALL, train=False, view="wide")


def test_gray_and_invert():
    v = _video(3, 8, 64, 86)
    rgb = VideoAugment(SMALL, train=False, mean=(0, 0, 0), std=(1, 1, 1))(v)
    gray = VideoAugment(SMALL, train=False, mean=(0, 0, 0), std=(1, 1, 1), gray=True)(v)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    lum = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    torch.testing.assert_close(gray[:, 0], lum, rtol=0, atol=1e-5)
    # invert_p=1 reverses every training clip, invert_p=0 none; the crops are the same draws
    kw = dict(train=True, mean=(0, 0, 0), std=(1, 1, 1), gray=True)
    plain = VideoAugment(SMALL, **kw)(v, _gen(2))
    inv = VideoAugment(SMALL, invert_p=1.0, **kw)(v, _gen(2))
    torch.testing.assert_close(inv, 1.0 - plain, rtol=0, atol=1e-6)
    half = VideoAugment(SMALL, invert_p=0.5, **kw)(_video(64, 4, 64, 86), _gen(4))
    ref = VideoAugment(SMALL, **kw)(_video(64, 4, 64, 86), _gen(4))
    flipped = [bool(torch.allclose(half[i], 1.0 - ref[i], atol=1e-6)) for i in range(64)]
    same = [bool(torch.equal(half[i], ref[i])) for i in range(64)]
    assert all(f != s for f, s in zip(flipped, same)) and 10 < sum(flipped) < 54
    # evaluation never inverts
    ev = VideoAugment(SMALL, train=False, invert_p=1.0, mean=(0, 0, 0), std=(1, 1, 1))(v)
    assert torch.equal(ev, rgb)
    with pytest.raises(ValueError):
        VideoAugment(SMALL, train=True, invert_p=1.5)


def test_audio_warp_moves_a_band_and_stretches_time():
    from videolabel.data.augment import warp_spectrogram

    x = torch.zeros(3, 64, 100)
    x[:, 20, 40:60] = 1.0  # band 20, frames 40..59
    u = torch.tensor([[0.5, 0.5], [1.0, 0.5], [0.5, 0.0]])  # identity; frequency x1.2; time x0.8
    out = warp_spectrogram(x, u, 0.2)
    torch.testing.assert_close(out[0], x[0], rtol=0, atol=1e-5)  # factors 1, 1: unchanged
    assert int(out[1].sum(dim=1).argmax()) == 24  # band 20 -> 20 * 1.2
    lit = (out[2, 20] > 0.5).nonzero().flatten()
    assert 40 < int(lit.min()) and int(lit.max()) < 59 and 14 <= len(lit) <= 17  # 20 frames -> 16 about 49.5
    # the module: off by default (bit for bit the old output), on in training only, seeded
    a = _audio(8)
    plain = AudioAugment("tiny", train=True)(a, _gen(1))
    assert torch.equal(AudioAugment("tiny", train=True, warp=0.0)(a, _gen(1)), plain)
    w1 = AudioAugment("tiny", train=True, warp=0.15)(a, _gen(1))
    assert w1.shape == plain.shape and not torch.allclose(w1, plain)
    assert torch.equal(AudioAugment("tiny", train=True, warp=0.15)(a, _gen(1)), w1)
    ev = AudioAugment("tiny", train=False, warp=0.15)(a)
    assert torch.equal(ev, AudioAugment("tiny", train=False)(a))
    with pytest.raises(ValueError):
        AudioAugment("tiny", train=True, warp=1.0)


def test_gaussian_blur_matches_brute_force():
    from videolabel.data.augment import gaussian_blur, gaussian_kernels

    k = gaussian_kernels(torch.tensor([0.0, 1.0, 2.5]), 4)
    torch.testing.assert_close(k.sum(dim=1), torch.ones(3))
    assert torch.equal(k[0], torch.tensor([0, 0, 0, 0, 1.0, 0, 0, 0, 0]))  # sigma 0: the identity
    t = torch.arange(-4, 5, dtype=torch.float64)
    ref = torch.exp(-t**2 / (2 * 2.5**2))
    torch.testing.assert_close(k[2].double(), ref / ref.sum(), rtol=0, atol=1e-6)
    # each sample by its own sigma, edges replicated: the 2-D sum over the clamped neighbourhood
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 7, 9, generator=g)
    sig = torch.tensor([0.0, 0.8, 1.7])
    out = gaussian_blur(x, sig, 3)
    kk = gaussian_kernels(sig, 3).double()
    brute = torch.zeros(3, 2, 7, 9, dtype=torch.float64)
    for b in range(3):
        for i in range(7):
            for j in range(9):
                for di in range(-3, 4):
                    for dj in range(-3, 4):
                        w = kk[b, di + 3] * kk[b, dj + 3]
                        brute[b, :, i, j] += w * x[b, :, min(max(i + di, 0), 6), min(max(j + dj, 0), 8)].double()
    torch.testing.assert_close(out.double(), brute, rtol=0, atol=1e-5)
    assert torch.equal(out[0], x[0])


def test_blur_and_noise_train_only_seeded_and_off_by_default():
    v = _video(16, 8, 64, 86)
    kw = dict(train=True, norm="clip")
    plain = VideoAugment(SMALL, **kw)(v, _gen(3))
    assert torch.equal(VideoAugment(SMALL, blur=0.0, noise=0.0, **kw)(v, _gen(3)), plain)  # off: bit for bit
    blurred = VideoAugment(SMALL, blur=2.0, **kw)(v, _gen(3))
    assert torch.equal(VideoAugment(SMALL, blur=2.0, **kw)(v, _gen(3)), blurred)  # seeded
    # the same crops (drawn first), smoothed: less energy in the pixel-to-pixel differences on average

    def roughness(x: torch.Tensor) -> torch.Tensor:
        return (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3, 4))

    assert float(roughness(blurred).mean()) < 0.8 * float(roughness(plain).mean())
    torch.testing.assert_close(blurred.mean(dim=(1, 2, 3, 4)), plain.mean(dim=(1, 2, 3, 4)), rtol=0, atol=0.05)
    noisy = VideoAugment(SMALL, noise=0.5, **kw)(v, _gen(3))
    d = noisy - plain
    sd = d.std(dim=(1, 2, 3, 4))  # per clip ~ U[0, 0.5]
    assert float(sd.max()) <= 0.55 and float(sd.max()) > 0.2 and abs(float(d.mean())) < 0.05
    # evaluation never blurs nor adds noise
    ev = VideoAugment(SMALL, train=False, norm="clip", blur=2.0, noise=0.5)(v)
    assert torch.equal(ev, VideoAugment(SMALL, train=False, norm="clip")(v))
    with pytest.raises(ValueError):
        VideoAugment(SMALL, train=True, blur=-1.0)
    with pytest.raises(ValueError):
        VideoAugment(SMALL, train=True, noise=-0.1)


def test_luminance_skewness_matches_brute_force():
    from scipy.stats import skew

    from videolabel.data.augment import luminance_skewness

    x = torch.rand(5, 3, 3, 6, 7, generator=_gen(1)) ** 3  # skewed to the right
    x[1] = 1.0 - x[1]  # and one to the left
    x[2] = 0.25  # flat: 0
    lum = (0.299 * x[:, :, 0] + 0.587 * x[:, :, 1] + 0.114 * x[:, :, 2]).reshape(5, -1).double().numpy()
    got = luminance_skewness(x)
    assert got.shape == (5,) and float(got[2]) == 0.0
    np.testing.assert_allclose(got[[0, 1, 3, 4]].numpy(), skew(lum[[0, 1, 3, 4]], axis=1), rtol=1e-4, atol=1e-5)
    assert float(got[0]) > 0.5 and float(got[1]) < -0.5


def _ink_on_paper(ink: tuple[int, int, int], paper: tuple[int, int, int], b=1, seed=0) -> torch.Tensor:
    """A small bar of ``ink`` (a sixth of the frame) over ``paper`` with a little noise: uint8 [b,8,64,64,3]."""
    g = _gen(seed)
    v = torch.empty(b, 8, 64, 64, 3)
    v[:] = torch.tensor(paper, dtype=torch.float32)
    v[:, :, 16:48, 24:36] = torch.tensor(ink, dtype=torch.float32)
    v += 6 * torch.randn(v.shape, generator=g)
    return v.clamp(0, 255).round().to(torch.uint8)


def test_skew_polarity_makes_dark_on_light_and_light_on_dark_alike():
    light = _ink_on_paper((230, 230, 230), (30, 30, 30))
    dark = 255 - light  # the same picture, reversed
    for train in (False, True):
        for norm in ("fixed", "clip"):
            kw = dict(train=train, norm=norm, gray=True)
            a = VideoAugment(SMALL, polarity="skew", **kw)(light, _gen(7))
            b = VideoAugment(SMALL, polarity="skew", **kw)(dark, _gen(7))
            torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
            keep_a = VideoAugment(SMALL, **kw)(light, _gen(7))
            keep_b = VideoAugment(SMALL, **kw)(dark, _gen(7))
            torch.testing.assert_close(keep_a, a, rtol=0, atol=1e-5)  # already light on dark: unchanged
            assert float((keep_a - keep_b).abs().mean()) > 0.5  # without it the two differ
    # coloured ink and paper: only the luminance's skew decides, so red on yellow and yellow on red
    # (the same luminance contrast, reversed) come out alike in gray
    red_on_yellow = _ink_on_paper((200, 20, 20), (240, 220, 40))
    yellow_on_red = _ink_on_paper((240, 220, 40), (200, 20, 20))
    kw = dict(train=False, norm="clip", gray=True, polarity="skew")
    a, b = VideoAugment(SMALL, **kw)(red_on_yellow), VideoAugment(SMALL, **kw)(yellow_on_red)
    assert float((a - b).abs().mean()) < 0.1
    # the default keeps the polarity, and bad values are refused
    v = _video(2)
    assert torch.equal(VideoAugment(SMALL, train=True)(v, _gen(1)),
                       VideoAugment(SMALL, train=True, polarity="keep")(v, _gen(1)))
    with pytest.raises(ValueError, match="polarity"):
        VideoAugment(SMALL, train=False, polarity="invert")


def _level_reference(x: np.ndarray, floor: float, peak=6.0, q=0.5) -> np.ndarray:
    """level_and_noise_floor written out band by band in numpy (float64)."""
    margin, empty = math.log(2.0), math.log(1e-6) + 0.01
    out = np.empty_like(x, dtype=np.float64)
    for b in range(x.shape[0]):
        top = x[b].max()
        sh = x[b] + (peak - top) if top > empty else x[b].astype(np.float64)
        for f in range(x.shape[1]):
            vals = sh[f][x[b, f] > empty]
            c = floor if len(vals) == 0 else max(floor, float(np.quantile(vals, q)) + margin)
            out[b, f] = np.logaddexp(sh[f], c) - c + floor
    return out


def test_level_and_noise_floor_matches_a_reference_and_removes_level_and_noise():
    from videolabel.data.augment import level_and_noise_floor

    g = _gen(3)
    T, Fb = 60, 8
    speech = torch.zeros(Fb, T)
    speech[2:6, 20:32] = 6.0  # a word, 6 nats above the background, in 4 bands
    noise = 0.3 * torch.randn(4, Fb, T, generator=g)
    x = torch.stack([
        speech + noise[0] - 2.0,  # background at -2
        speech + noise[1] + 1.5,  # a louder background (and recording)
        speech + noise[2] - 2.0,
        torch.full((Fb, T), math.log(1e-6)),  # all silence: stays silent
    ])
    x[2, :, 40:] = math.log(1e-6)  # a third of it padding: left out of the background estimate
    got = level_and_noise_floor(x, 0.0)
    ref = _level_reference(x.numpy(), 0.0)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-4)
    # a gain on the recording (a shift of every bin that holds sound; padding stays empty) changes nothing
    louder = torch.where(x > math.log(1e-6) + 0.01, x + 4.0, x)
    torch.testing.assert_close(level_and_noise_floor(louder, 0.0), got, rtol=0, atol=1e-4)
    # the word reads the same over either background; the background and the padding read near the floor
    word = (slice(2, 6), slice(22, 30))
    assert abs(float(got[0][word].mean() - got[1][word].mean())) < 0.3
    assert float(got[0][word].mean()) > 3.0
    for b in range(3):
        assert float(got[b][:, :15].abs().mean()) < 0.6
    assert float(got[2][:, 40:].abs().max()) < 1e-3 and float(got[3].abs().max()) < 1e-3
    # clean audio (background under the floor): the fixed floor after the level shift, exactly
    clean = 2 * speech.unsqueeze(0) - 9.0 + 0.01 * torch.randn(1, Fb, T, generator=g)  # 12 nats above it
    want = torch.logaddexp(clean + (6.0 - clean.max()), torch.tensor(0.0))
    torch.testing.assert_close(level_and_noise_floor(clean, 0.0), want, rtol=0, atol=1e-6)


def test_audio_level_auto_in_the_module():
    a = _audio(6)
    fixed = AudioAugment("tiny", train=False)(a)
    assert torch.equal(AudioAugment("tiny", train=False, level="fixed")(a), fixed)  # the default: bit for bit
    auto = AudioAugment("tiny", train=False, level="auto")
    torch.testing.assert_close(auto(a + 3.0), auto(a), rtol=0, atol=2e-3)  # level-free (float16 input)
    assert not torch.allclose(AudioAugment("tiny", train=False)(a + 3.0), fixed)
    with pytest.raises(ValueError, match="level"):
        AudioAugment("tiny", train=False, level="loud")
