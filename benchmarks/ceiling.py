#!/usr/bin/env python
"""The supervised ceiling of a preset: each tower trained on the true labels, scored on unseen speakers.

Before blaming the self-labelling for poor clusters, check that a tower can learn the classes at all
with the inputs, augmentations, optimiser and step budget that training gives it. This script trains
each tower of a preset (the product's encoder, one of the product's clustering heads as classifier)
with cross-entropy against the ground-truth labels of a training cache, for a fixed number of epochs
(one clip per video per epoch, batches of the config's size: ``epochs x ceil(videos / 32)`` steps at
the tiny recipe's batch of 32; ``make demo`` trains 12 epochs of 600 videos, 228 steps), and reports its
accuracy on a held-out cache (other speakers) with the inference inputs of ``videolabel assign`` (clip
logits averaged per video, BatchNorm statistics recomputed at the final weights over the training clips,
as training does at its end).

Everything that shapes what the tower sees comes from the library: :func:`make_config` (the preset's
defaults, ``--config``, ``--set``), :func:`build_video_encoder` / :func:`build_audio_encoder`,
:class:`VideoAugment` / :class:`AudioAugment` with the config's settings, the optimiser and learning-
rate rule of the trainer (linear scaling per 16 clips, warm-up, schedule), precise BatchNorm.

CPU, from the repository root (the caches come from ``videolabel ingest``; the labels are AV-Digits'
``labels.csv``; ``benchmarks/avdigits.py`` leaves its training and held-out caches and labels under
``benchmarks/work/avdigits/cache`` and ``data``)::

    python benchmarks/ceiling.py --train CACHE_TR --train-gt TR/labels.csv \\
        --heldout CACHE_HO --heldout-gt HO/labels.csv --preset tiny --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model  # noqa: E402

TOWERS = ("video", "audio")


def _codes(cache: Path, gt: Path, classes: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Class index of every video of ``cache`` (in the dataset's order) from a ground-truth CSV."""
    from videolabel.data.dataset import ShardDataset
    from videolabel.groundtruth import join_ground_truth, read_ground_truth

    ds = ShardDataset(cache)
    aligned, _ = join_ground_truth(ds.videos["path"], read_ground_truth(gt))
    if aligned.isna().any():
        raise SystemExit(f"ceiling: {int(aligned.isna().sum())} video(s) of {cache} have no label in {gt}")
    values = aligned.astype(str).to_numpy()
    classes = classes or sorted(set(values))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(v, -1) for v in values], np.int64), classes


def _load(cache: Path, cfg: Any) -> dict[str, Any]:
    """Every clip of a cache in memory: uint8 video, float16 audio (float32 when ``cfg.audio_level`` levels it, as
    a SeLaVi run does on its way to the device: :mod:`videolabel.data.levels`), video index per clip."""
    from videolabel.data.dataset import ShardDataset
    from videolabel.data.levels import apply_levels, levels_for

    ds = ShardDataset(cache)
    batch = ds.__getitems__(list(range(len(ds))))
    audio = batch["audio"]
    levels = levels_for(ds, cfg.audio_level, cfg.log_floor)  # None unless audio_level=video
    if levels is not None:
        audio = apply_levels(audio, levels.offsets, batch["video_index"])
    return {"video": batch["video"], "audio": audio, "vidx": batch["video_index"].long(),
            "n_videos": len(ds.videos)}


class Tower(torch.nn.Module):
    """One encoder of the preset and one clustering head of the product used as a classifier."""

    def __init__(self, preset: Any, tower: str, n_classes: int) -> None:
        from videolabel.models.heads import ClusterHead
        from videolabel.models.presets import build_audio_encoder, build_video_encoder

        super().__init__()
        self.tower = tower
        self.encoder = build_video_encoder(preset) if tower == "video" else build_audio_encoder(preset)
        self.head = ClusterHead(self.encoder.out_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def train_tower(cfg: Any, tower: str, train: dict[str, Any], y_train: np.ndarray, held: dict[str, Any],
                y_held: np.ndarray, n_classes: int, seed: int, epochs: int,
                eval_every: int = 0) -> dict[str, Any]:
    """Train one tower on the true labels; held-out accuracy per video at the end (and every
    ``eval_every`` epochs when > 0)."""
    from videolabel.data.augment import AudioAugment, VideoAugment
    from videolabel.models.batchnorm import recalibrate_batchnorm
    from videolabel.models.presets import get_preset
    from videolabel.train.build import make_inputs
    from videolabel.train.schedule import learning_rate

    preset = get_preset(cfg.preset)
    torch.manual_seed(seed)
    model = Tower(preset, tower, n_classes)
    inputs = make_inputs(preset, cfg, cuda=False)  # the augmentations a SeLaVi run of ``cfg`` trains with
    aug_t: VideoAugment | AudioAugment
    aug_e: VideoAugment | AudioAugment
    if tower == "video":
        aug_t, aug_e = inputs.video_train, inputs.video_eval
    else:
        aug_t, aug_e = inputs.audio_train, inputs.audio_eval
    key = "video" if tower == "video" else "audio"
    base_lr = cfg.lr * cfg.batch_size / 16.0
    if cfg.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=base_lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    n_v = train["n_videos"]
    vidx = train["vidx"].numpy()
    first = np.searchsorted(vidx, np.arange(n_v))
    counts = np.bincount(vidx, minlength=n_v)
    steps_per_epoch = max(1, math.ceil(n_v / cfg.batch_size))
    total = epochs * steps_per_epoch
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    yt = torch.as_tensor(y_train)
    curve = []
    t0 = time.perf_counter()
    step = 0

    for epoch in range(epochs):
        order = rng.permutation(n_v)
        clips = first[order] + (rng.random(n_v) * counts[order]).astype(np.int64)
        model.train()
        for b in range(steps_per_epoch):
            sel = torch.as_tensor(clips[b * cfg.batch_size : (b + 1) * cfg.batch_size])
            if len(sel) < 2:
                continue
            for g in opt.param_groups:
                g["lr"] = learning_rate(step, base_lr, warm, total, cfg.lr_schedule)
            x = aug_t(train[key][sel], gen)
            loss = F.cross_entropy(model(x), yt[train["vidx"][sel]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if (eval_every and (epoch + 1) % eval_every == 0) or epoch + 1 == epochs:
            acc = evaluate_tower(model, aug_e, key, train, held, y_held, recalibrate_batchnorm)
            curve.append({"epoch": epoch + 1, "heldout_acc": acc, "seconds": round(time.perf_counter() - t0, 1)})
    return {"tower": tower, "seed": seed, "epochs": epochs, "steps": step, "heldout_acc": curve[-1]["heldout_acc"],
            "seconds": round(time.perf_counter() - t0, 1), "curve": curve}


@torch.no_grad()
def evaluate_tower(model: torch.nn.Module, aug_e: Any, key: str, train: dict[str, Any], held: dict[str, Any],
                   y_held: np.ndarray, recalibrate: Any, batch: int = 64) -> float:
    """Precise BatchNorm over the training clips (inference inputs), then per-video accuracy on
    ``held`` with the clip logits averaged per video (as ``videolabel assign`` does)."""
    n = len(train["vidx"])
    batches = [torch.arange(s, min(n, s + batch)) for s in range(0, n, batch)]
    recalibrate(model, batches, lambda idx: model(aug_e(train[key][idx])))
    model.eval()
    m = len(held["vidx"])
    logits = torch.cat([model(aug_e(held[key][s : s + batch])) for s in range(0, m, batch)])
    probs = torch.zeros(held["n_videos"], logits.shape[1]).index_add_(0, held["vidx"], F.log_softmax(logits, -1))
    model.train()
    return float((probs.argmax(1).numpy() == y_held).mean())


def ceiling(train_cache: Path, train_gt: Path, held_cache: Path, held_gt: Path, cfg: Any,
            seeds: Sequence[int], epochs: int, towers: Sequence[str] = TOWERS, eval_every: int = 0) -> dict[str, Any]:
    """Both towers over the seeds: per-run results and mean / std of the held-out accuracy."""
    y_tr, classes = _codes(train_cache, train_gt)
    y_ho, _ = _codes(held_cache, held_gt, classes)
    tr, ho = _load(train_cache, cfg), _load(held_cache, cfg)
    runs = [train_tower(cfg, t, tr, y_tr, ho, y_ho, len(classes), s, epochs, eval_every)
            for t in towers for s in seeds]
    summary = {}
    for t in towers:
        accs = [r["heldout_acc"] for r in runs if r["tower"] == t]
        summary[t] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "n": len(accs)}
    return {"preset": cfg.preset, "epochs": epochs, "batch_size": cfg.batch_size, "n_train": tr["n_videos"],
            "n_heldout": ho["n_videos"], "classes": len(classes), "runs": runs, "summary": summary,
            "cpu": cpu_model(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=Path, required=True, help="training cache (videolabel ingest)")
    ap.add_argument("--train-gt", type=Path, required=True, help="labels CSV of the training videos")
    ap.add_argument("--heldout", type=Path, required=True, help="held-out cache (other speakers)")
    ap.add_argument("--heldout-gt", type=Path, required=True, help="labels CSV of the held-out videos")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--config", type=Path, help="a training config file (YAML, TOML, JSON)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a training setting")
    ap.add_argument("--preset-set", action="append", default=[], metavar="KEY=VALUE",
                    help="change a field of the preset for this run (e.g. video_encoder=tiny3d, video_crop=40)")
    ap.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--towers", nargs="+", choices=TOWERS, default=list(TOWERS))
    ap.add_argument("--eval-every", type=int, default=0, help="also score every N epochs (a learning curve)")
    ap.add_argument("--json", type=Path, help="write every number here")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from videolabel.train.config import make_config, read_config_file

    args = parse_args(argv)
    if args.preset_set:
        import yaml

        from videolabel.models import presets

        base = presets.get_preset(args.preset).to_dict()
        base.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.preset_set)})
        presets.PRESETS[args.preset] = presets.Preset.from_dict(base)
    sets = dict(s.split("=", 1) for s in args.set)
    cfg = make_config(read_config_file(args.config) if args.config else None, {"preset": args.preset, **sets})
    res = ceiling(args.train, args.train_gt, args.heldout, args.heldout_gt, cfg, args.seeds, args.epochs,
                  args.towers, args.eval_every)
    for t, s in res["summary"].items():
        print(f"{t:6s} held-out accuracy {s['mean']:.3f} ± {s['std']:.3f} ({s['n']} seeds, {args.epochs} epochs)")
    for r in res["runs"]:
        print(f"  {r['tower']} seed {r['seed']}: {r['heldout_acc']:.3f} in {r['seconds']} s "
              + " ".join(f"e{c['epoch']}:{c['heldout_acc']:.2f}" for c in r["curve"]))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
