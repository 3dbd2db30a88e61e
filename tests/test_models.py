"""Encoders, heads, the SeLaVi module and presets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from videolabel.models import (
    PRESETS,
    ClusterHead,
    FrameCNNEncoder,
    Preset,
    R2Plus1D18Encoder,
    ResNet9AudioEncoder,
    SeLaVi,
    SpecCNNEncoder,
    TinyAudioEncoder,
    TinyVideoEncoder,
    build_audio_encoder,
    build_model,
    build_video_encoder,
    describe,
    get_preset,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _inputs(preset: Preset, b: int = 2):
    p = get_preset(preset)
    v = torch.randn(b, 3, p.video_frames, p.video_crop, p.video_crop)
    a = torch.randn(b, 1, p.audio_mels, p.audio_frames)
    return v, a


# -- encoders -------------------------------------------------------------------------------
def test_tiny_encoders_shapes():
    p = PRESETS["tiny"]
    v, a = _inputs(p, 3)
    ve, ae = build_video_encoder(p), build_audio_encoder(p)
    assert isinstance(ve, FrameCNNEncoder) and isinstance(ae, SpecCNNEncoder)
    fv, fa = ve(v), ae(a)
    assert fv.shape == (3, p.feat_dim_v) and fa.shape == (3, p.feat_dim_a)
    assert fv.dtype == fa.dtype == torch.float32
    # any input size works (global pooling)
    assert ve(torch.randn(2, 3, 5, 37, 41)).shape == (2, p.feat_dim_v)
    assert ae(torch.randn(2, 1, 40, 77)).shape == (2, p.feat_dim_a)
    # the earlier 3D / strided tiny encoders stay selectable by name
    old = p.replace(name="t3d", video_encoder="tiny3d", audio_encoder="tiny2d", video_widths=(16, 32, 64, 128))
    assert isinstance(build_video_encoder(old), TinyVideoEncoder) and isinstance(build_audio_encoder(old), TinyAudioEncoder)


def test_frame_cnn_is_the_mean_of_its_frames():
    """frames2d: one 2D CNN per frame, features averaged over time (eval mode: no batch coupling)."""
    torch.manual_seed(0)
    enc = FrameCNNEncoder((8, 16, 16)).eval()
    x = torch.randn(2, 3, 3, 24, 24)
    per_frame = torch.stack([enc(x[:, :, t : t + 1]) for t in range(3)]).mean(0)
    torch.testing.assert_close(enc(x), per_frame)
    # max-pools tolerate a small shift: a shifted frame keeps its features closer than another frame
    img = torch.zeros(1, 3, 1, 24, 24)
    img[..., 8:14, 8:12] = 3.0
    other = torch.zeros_like(img)
    other[..., 4:6, 2:20] = 3.0
    f, g, h = enc(img), enc(img.roll(1, dims=-1)), enc(other)
    assert (f - g).norm() < (f - h).norm()


def test_paper_audio_encoder_is_resnet9():
    enc = ResNet9AudioEncoder()
    assert enc.conv1.in_channels == 1 and enc.conv1.kernel_size == (7, 7) and enc.conv1.stride == (2, 2)
    widths = []
    for layer in (enc.layer1, enc.layer2, enc.layer3, enc.layer4):
        assert len(layer) == 1  # one BasicBlock per stage
        widths.append(layer[0].conv2.out_channels)
    assert widths == [64, 128, 256, 512]
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert len(convs) == 9  # stem + 4 blocks x 2 (downsample 1x1 convs excluded)
    enc.eval()
    with torch.no_grad():
        out = enc(torch.randn(2, 1, 257, 199))
    assert out.shape == (2, 512)
    assert not hasattr(enc, "fc")


def test_paper_video_encoder_small_input():
    enc = R2Plus1D18Encoder().eval()
    assert not any(isinstance(m, nn.Linear) for m in enc.modules())  # fc removed
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 4, 32, 32))
    assert out.shape == (1, 512)


def test_paper_model_full_size_forward():
    """Paper preset on its real input size, B=2 (~7 s on 2 CPU cores; speed is benchmarks/train.py's job)."""
    model = build_model("paper", num_clusters=12, num_heads=3).eval()
    assert model.feat_dim_v == model.feat_dim_a == 512
    v, a = _inputs(PRESETS["paper"], 2)
    with torch.no_grad():
        out = model(v, a)
    assert out["video_logits"].shape == (3, 2, 12)
    assert out["audio_logits"].shape == (3, 2, 12)
    assert torch.isfinite(out["video_logits"]).all() and torch.isfinite(out["audio_logits"]).all()


# -- heads and the module -------------------------------------------------------------------
def test_head_structure():
    head = ClusterHead(16, 7)
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head[-1] is head.fc2 and head.fc1.out_features == 16 and head.fc2.out_features == 7
    assert head(torch.randn(4, 16)).shape == (4, 7)


@pytest.fixture
def tiny_model() -> SeLaVi:
    return build_model("tiny", num_clusters=10, num_heads=4)


def test_selavi_forward_shapes(tiny_model):
    v, a = _inputs(tiny_model.preset, 3)
    out = tiny_model(video=v, audio=a)
    assert set(out) == {"video_logits", "audio_logits"}
    assert out["video_logits"].shape == out["audio_logits"].shape == (4, 3, 10)
    assert out["video_logits"].dtype == torch.float32
    assert set(tiny_model(video=v)) == {"video_logits"}
    assert set(tiny_model(audio=a)) == {"audio_logits"}
    assert tiny_model(audio=a)["audio_logits"].shape == (4, 3, 10)
    with pytest.raises(ValueError):
        tiny_model()
    assert tiny_model.num_heads == 4 and tiny_model.num_clusters == 10
    assert len(tiny_model.video_heads) == len(tiny_model.audio_heads) == 4
    assert isinstance(tiny_model.video_heads, nn.ModuleList)


def test_fusion_model_heads_see_both_encoders():
    model = build_model("tiny", num_clusters=6, num_heads=2, fusion=True).eval()
    assert not hasattr(build_model("tiny", 6, 2), "fused_heads")
    v, a = _inputs(model.preset, 3)
    with torch.no_grad():
        out = model(video=v, audio=a)
        assert set(out) == {"fused_logits"} and out["fused_logits"].shape == (2, 3, 6)
        fv, fa = model.encode_video(v), model.encode_audio(a)
        torch.testing.assert_close(model.fused_forward(fv, fa), out["fused_logits"])
        # the logits depend on the audio features too: zeroing them changes the output
        assert not torch.allclose(model.fused_forward(fv, torch.zeros_like(fa)), out["fused_logits"])
    assert model.fused_heads[0].fc1.in_features == model.feat_dim_v + model.feat_dim_a
    with pytest.raises(ValueError, match="both"):
        model(video=v)
    with pytest.raises(ValueError, match="no fusion heads"):
        build_model("tiny", 6, 2).fused_forward(fv, fa)


def test_heads_forward_matches_forward(tiny_model):
    tiny_model.eval()
    v, a = _inputs(tiny_model.preset, 2)
    with torch.no_grad():
        out = tiny_model(v, a)
        fv, fa = tiny_model.encode_video(v), tiny_model.encode_audio(a)
        assert fv.shape == (2, 128) and fa.shape == (2, 128)
        torch.testing.assert_close(tiny_model.heads_forward(fv, "video"), out["video_logits"])
        torch.testing.assert_close(tiny_model.heads_forward(fa, "audio"), out["audio_logits"])
        # head h is its own MLP
        torch.testing.assert_close(tiny_model.audio_heads[2](fa), out["audio_logits"][2])


def test_last_linear_row_permutation_permutes_logits(tiny_model):
    tiny_model.eval()
    _, a = _inputs(tiny_model.preset, 5)
    with torch.no_grad():
        before = tiny_model(audio=a)["audio_logits"]
        lin = tiny_model.last_linear("audio", 1)
        assert isinstance(lin, nn.Linear) and lin is tiny_model.audio_heads[1].fc2
        perm = torch.roll(torch.randperm(10), 3)
        perm = perm if not torch.equal(perm, torch.arange(10)) else torch.roll(perm, 1)
        lin.weight.copy_(lin.weight[perm])
        lin.bias.copy_(lin.bias[perm])
        after = tiny_model(audio=a)["audio_logits"]
    torch.testing.assert_close(after[1], before[1][:, perm])
    assert not torch.allclose(after[1], before[1])
    torch.testing.assert_close(after[0], before[0])  # other heads untouched
    assert tiny_model.last_linear("video", 0) is tiny_model.video_heads[0][-1]
    with pytest.raises(ValueError):
        tiny_model.last_linear("text", 0)


def test_backward_reaches_both_encoders(tiny_model):
    v, a = _inputs(tiny_model.preset, 4)
    out = tiny_model(v, a)
    loss = sum(torch.nn.functional.cross_entropy(o.flatten(0, 1), torch.randint(0, 10, (16,))) for o in out.values())
    loss.backward()
    for enc in (tiny_model.video_encoder, tiny_model.audio_encoder):
        grads = [p.grad for p in enc.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_channels_last_and_autocast(tiny_model):
    tiny_model.eval()
    v, a = _inputs(tiny_model.preset, 2)
    with torch.no_grad():
        ref = tiny_model(v, a)
        tiny_model.to_channels_last()
        w = tiny_model.video_encoder.features[0][0].weight
        fmt = torch.channels_last_3d if w.dim() == 5 else torch.channels_last
        assert w.is_contiguous(memory_format=fmt) and not w.is_contiguous()
        out = tiny_model(v.contiguous(memory_format=torch.channels_last_3d), a)
        torch.testing.assert_close(out["video_logits"], ref["video_logits"], rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = tiny_model(v, a)
    assert bf["video_logits"].dtype == torch.float32 and bf["audio_logits"].shape == (4, 2, 10)


# -- presets --------------------------------------------------------------------------------
def test_presets_numbers_and_roundtrip():
    paper, tiny = PRESETS["paper"], PRESETS["tiny"]
    assert (paper.video_frames, paper.video_crop, paper.scale_jitter) == (30, 112, (128, 160))
    assert (paper.audio_mels, paper.audio_frames, paper.feat_dim_v, paper.feat_dim_a) == (257, 199, 512, 512)
    assert tiny.video_crop <= tiny.scale_jitter[0] <= tiny.scale_jitter[1]
    for p in (paper, tiny):
        assert Preset.from_dict(p.to_dict()) == p
        assert p.name in describe(p)
    assert get_preset("tiny") is tiny
    with pytest.raises(ValueError):
        get_preset("huge")
    with pytest.raises(ValueError):
        build_model(tiny.replace(feat_dim_v=64), num_clusters=5, num_heads=1)
    custom = build_model(tiny.replace(name="t2", video_widths=(8, 16, 32), feat_dim_v=32), 5, 2)
    assert custom(video=torch.randn(2, 3, 4, 24, 24))["video_logits"].shape == (2, 2, 5)
