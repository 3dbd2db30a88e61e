"""The SeLaVi training loop (paper section 3, method.md "Training loop").

``train()`` builds a :class:`Trainer` (data, model, optimiser, run folder: :mod:`~videolabel.train.build`)
and runs it: modality alignment once (eq. 7), then steps of cross-entropy against the current labels
(:meth:`Trainer.fit`), with Sinkhorn-Knopp label solves (:mod:`~videolabel.train.labelling`) on a
power-law schedule, then the final labels (:meth:`Trainer.finish`). Every random choice is drawn from a
generator seeded by (seed, what, when), so a resumed run repeats exactly what an uninterrupted one did.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import videolabel
from videolabel.cluster.schedule import clustering_schedule
from videolabel.data.dataset import ShardDataset
from videolabel.data.levels import levels_for
from videolabel.data.loader import StepBatches, make_loader
from videolabel.errors import VideolabelError, first_line
from videolabel.models import build_model
from videolabel.seeds import BN, STEP, generator, seed_for
from videolabel.train import dist as D
from videolabel.train.build import (
    check_clusters,
    configure_backends,
    draw_prior,
    make_inputs,
    make_optimizer,
    read_gt_codes,
    wrap_model,
)
from videolabel.train.checkpoint import (
    CHECKPOINT_FORMAT,
    FINAL,
    LAST,
    RESUME_KEYS,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from videolabel.train.config import TrainConfig
from videolabel.train.labelling import align_modalities, distill_labels, solve_labels, solve_metrics
from videolabel.train.objective import selavi_loss
from videolabel.train.passes import Passes
from videolabel.train.rundir import RunFolder, check_resumable, hash_ids, run_info
from videolabel.train.schedule import learning_rate, scaled_lr
from videolabel.train.signals import StopFlag
from videolabel.train.throughput import Throughput

__all__ = ["TrainSummary", "Trainer", "train"]


@dataclass
class TrainSummary:
    run_dir: str
    steps: int
    total_steps: int
    epochs: float
    seconds: float
    clips_per_s: float
    data_wait: float
    solves: int
    finished: bool
    preempted: bool
    checkpoint: str
    labels: str | None
    nmi_gt: float | None = None
    last_metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Trainer:
    """One SeLaVi run. ``Trainer(...).run()`` trains; the pieces are public for benchmarks and tests."""

    def __init__(self, cache_dir: str | Path, out_dir: str | Path, cfg: TrainConfig, *, resume: bool = False,
                 gt: str | Path | None = None, device: str | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        """``say``: where rank 0 tells the user of a slow step before it starts (an old cache's sound levels
        measured at the start); not called on other ranks."""
        self.cfg = cfg.validate()
        self.out = Path(out_dir)
        self.info = D.setup(device)
        self.dev = self.info.device
        self.cuda = self.dev.type == "cuda"
        configure_backends(cfg, self.cuda)

        self.ds = ShardDataset(cache_dir)
        self.cache_dir = Path(cache_dir)
        vids = self.ds.videos
        self.n = len(vids)
        if self.n < 2:
            raise VideolabelError(f"cache {cache_dir} holds {self.n} usable video(s); training needs at least 2")
        check_clusters(cfg, self.n)
        self.first_clip = vids["first_clip"].to_numpy(np.int64)
        self.n_clips = vids["n_clips"].to_numpy(np.int64)
        self.has_audio = torch.as_tensor(vids["has_audio"].to_numpy(bool).copy())
        self.ingest_hash = self.ds.config.hash()
        self.videos_hash = hash_ids(vids["video_id"].tolist())

        world = self.info.world_size
        self.steps_per_epoch = max(1, math.ceil(self.n / (cfg.batch_size * world)))
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.schedule = clustering_schedule(self.total_steps, cfg.n_solves, cfg.schedule_power)
        self.base_lr = scaled_lr(cfg.lr, cfg.batch_size, world)
        self.warmup_steps = int(round(cfg.warmup_epochs * self.steps_per_epoch))

        torch.manual_seed(cfg.seed)  # the model's initialisation
        self.model = build_model(cfg.preset, num_clusters=cfg.num_clusters, num_heads=cfg.num_heads,
                                 fusion=cfg.modalities == "concat", head_layers=cfg.head_layers).to(self.dev)
        if cfg.channels_last:  # also on the CPU: the tiny towers' label passes ran 1.7-2.4x faster (oneDNN)
            self.model.to_channels_last()
        self.inputs = make_inputs(self.model.preset, cfg, self.cuda)
        levels = levels_for(self.ds, cfg.audio_level, cfg.log_floor, self.dev,  # None unless audio_level=video
                            say=say if self.info.is_main else None)
        self.passes = Passes(cfg, self.model, self.ds, self.inputs, self.info, self.first_clip, self.n_clips,
                             levels.offsets if levels is not None else None)
        self.optimizer = make_optimizer(self.model, cfg, self.base_lr)
        self.labels = torch.zeros(cfg.num_heads, self.n, dtype=torch.int64)
        self.prior_masses = draw_prior(cfg)
        self.step = 0
        self.solve_index = 0
        self.aligned = False
        self.align_costs: list[tuple[float, float]] = []
        self.gt_codes = read_gt_codes(vids["path"], gt) if gt else None
        self._bn_step = -1  # step at which label-pass BatchNorm statistics were last recomputed
        self.last_metrics: dict[str, Any] = {}

        self.run_dir = RunFolder(self.out, is_main=self.info.is_main)
        try:
            self._prepare_run_dir(resume)
            if levels is not None:  # what the sound's levelling did to this collection, for the user to see
                self.log({**levels.record(), "step": self.step}, keep=False)
            self.ddp_model = wrap_model(self.model, cfg, self.info, self.cuda)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run folder (:meth:`run` does it when it ends); a later Trainer may then use it."""
        self.run_dir.close()

    # ------------------------------------------------------------------ the run folder and checkpoints
    def _prepare_run_dir(self, resume: bool) -> None:
        self.run_dir.open(resume)
        if resume:
            ckpt = self.run_dir.checkpoint_to_resume()
            state = load_checkpoint(ckpt, need=RESUME_KEYS)
            check_resumable(state, self.cfg, ingest_hash=self.ingest_hash, videos_hash=self.videos_hash,
                            videos=self.n, world_size=self.info.world_size)
            try:
                self.restore(state)
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
                raise VideolabelError(f"damaged checkpoint {ckpt}: {type(exc).__name__}: {first_line(exc)}") from None
            return
        self.run_dir.start(self.cfg, run_info(
            self.cfg, device=self.dev, world_size=self.info.world_size, cache_dir=self.cache_dir,
            ingest_config=self.ds.config.to_dict(), ingest_hash=self.ingest_hash, videos=self.n,
            videos_hash=self.videos_hash, steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps,
            schedule=self.schedule))
        D.barrier()

    def restore(self, state: dict[str, Any]) -> None:
        """A checkpoint's training state (:meth:`state_dict`) into this trainer, as ``--resume`` restores it; the
        caller checks that it belongs to this run (:func:`~videolabel.train.rundir.check_resumable`)."""
        load_weights(self.model, state["model"], self.out / LAST)
        self.optimizer.load_state_dict(state["optimizer"])
        for key, like in (("labels", self.labels), ("prior_masses", self.prior_masses)):
            if tuple(state[key].shape) != tuple(like.shape) or state[key].dtype != like.dtype:
                raise ValueError(f"{key} is {state[key].dtype} {list(state[key].shape)}, the run needs "
                                 f"{like.dtype} {list(like.shape)}")
        self.labels = state["labels"].clone()
        self.prior_masses = state["prior_masses"].clone()
        self.step = int(state["step"])
        self.solve_index = int(state["solve_index"])
        self.aligned = bool(state["aligned"])
        self.align_costs = [tuple(c) for c in state.get("align_costs", [])]
        torch.set_rng_state(state["rng_cpu"])
        self.run_dir.drop_metrics_after(self.step)

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "videolabel": videolabel.__version__,
            "model": {k.replace("_orig_mod.", ""): v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "labels": self.labels.cpu(),
            "prior_masses": self.prior_masses.cpu(),
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "total_steps": self.total_steps,
            "solve_index": self.solve_index,
            "schedule": list(self.schedule),
            "aligned": self.aligned,
            "align_costs": [list(c) for c in self.align_costs],
            "rng_cpu": torch.get_rng_state(),
            "train_config": self.cfg.to_dict(),
            "ingest_config": self.ds.config.to_dict(),
            "ingest_hash": self.ingest_hash,
            "videos_hash": self.videos_hash,
            "video_ids": self.ds.videos["video_id"].tolist(),
            "n_videos": self.n,
            "world_size": self.info.world_size,
        }

    def save(self, name: str = LAST) -> Path | None:
        path = self.out / name
        if self.info.is_main:
            save_checkpoint(self.state_dict(), path)
        D.barrier()
        return path

    def log(self, record: dict[str, Any], *, keep: bool = True) -> None:
        """One line of ``metrics.jsonl`` (main process); ``keep``: also the latest of its values in the summary."""
        self.run_dir.log(record)
        if keep:
            self.last_metrics.update(record)

    def write_labels(self) -> Path | None:
        """The final training labels (one row per video, a column per head) as ``labels.parquet``."""
        return self.run_dir.write_labels(self.ds.videos, self.labels.numpy())

    # ------------------------------------------------------------------ the label steps
    def align(self) -> None:
        """Modality alignment (eq. 7, :func:`~videolabel.train.labelling.align_modalities`), once."""
        cfg = self.cfg
        if cfg.align:
            if cfg.modalities == "both" and cfg.label_bn == "precise":  # collective: every process
                self.passes.recalibrate_bn(seed_for(cfg.seed, BN, 0), train_aug=True)
                self._bn_step = self.step  # the first solve, at the same weights, reuses these statistics
            self.align_costs += align_modalities(self.passes)
            if self.align_costs:
                self.log({"event": "align", "step": self.step,
                          "cost_before": float(np.mean([c[0] for c in self.align_costs])),
                          "cost_after": float(np.mean([c[1] for c in self.align_costs]))}, keep=False)
        self.aligned = True

    def solve_labels(self) -> dict[str, Any]:
        """One label solve (:func:`~videolabel.train.labelling.solve_labels`); returns its metrics row."""
        old = self.labels
        recalibrate = self.cfg.label_bn == "precise" and self._bn_step != self.step  # not at unchanged weights
        self.labels, extra = solve_labels(self.passes, old, self.prior_masses, self.solve_index, self.has_audio,
                                          recalibrate=recalibrate)
        self.solve_index += 1
        m = solve_metrics(old, self.labels, self.cfg.num_clusters, self.solve_index - 1, self.step, self.gt_codes,
                          solve_s=extra.pop("solve_s"), label_pass_s=extra.pop("label_pass_s"))
        m.update(extra)
        return m

    # ------------------------------------------------------------------ the training step
    def lr_at(self, step: int) -> float:
        return learning_rate(step, self.base_lr, self.warmup_steps, self.total_steps, self.cfg.lr_schedule)

    def train_step(self, video: torch.Tensor, audio: torch.Tensor, y: torch.Tensor, has_audio: torch.Tensor,
                   step: int) -> torch.Tensor:
        """One SGD step of cross-entropy of every head against its labels y [H, B] (:func:`selavi_loss`).

        Returns the loss (a device tensor: reading it is left to the caller, to avoid a sync)."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        g = generator(seed_for(cfg.seed, STEP, step, self.info.rank), self.dev)
        v = self.inputs.video_train(video, g) if cfg.modalities != "audio" else None
        a = self.inputs.audio_train(audio, g) if cfg.modalities != "video" else None
        with self.passes.autocast():  # one autocast for the step and the label passes
            out = self.ddp_model(video=v, audio=a)
        loss = selavi_loss(out, y, has_audio)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    # ------------------------------------------------------------------ the run
    def run(self, progress: Any = None) -> TrainSummary:
        """Align, fit, finish; a signal stops the run at a checkpoint (``preempted``: resume it later)."""
        stop = StopFlag()
        stop.install()
        t_start = time.perf_counter()
        labels_path = None
        try:
            if not self.aligned:
                self.align()
            preempted = self.fit(stop, progress)
            ckpt = self.save(LAST)
            if not preempted:
                ckpt, labels_path = self.finish()
        finally:
            stop.restore()
            self.close()
            if progress is not None:
                progress.stop()
        last = self.last_metrics
        return TrainSummary(
            run_dir=str(self.out), steps=self.step, total_steps=self.total_steps,
            epochs=self.step / self.steps_per_epoch, seconds=round(time.perf_counter() - t_start, 2),
            clips_per_s=float(last.get("clips_per_s", 0.0)), data_wait=float(last.get("data_wait", 0.0)),
            solves=self.solve_index, finished=not preempted, preempted=preempted, checkpoint=str(ckpt),
            labels=str(labels_path) if labels_path else None, nmi_gt=last.get("nmi_gt_head0"), last_metrics=last,
        )

    def fit(self, stop: StopFlag, progress: Any = None) -> bool:
        """The steps from :attr:`step` to the end, a label solve wherever the schedule puts one, a
        checkpoint every ``checkpoint_every`` epochs. Returns whether a signal stopped it."""
        cfg, spe = self.cfg, self.steps_per_epoch
        sampler = StepBatches(self.first_clip, self.n_clips, cfg.batch_size, self.info.world_size,
                              self.info.rank, cfg.seed, self.step, self.total_steps)
        loader = make_loader(self.ds, sampler, cfg.workers, self.cuda, cfg.prefetch)
        labels_dev, has_audio_dev = self.labels.to(self.dev), self.has_audio.to(self.dev)
        window = Throughput(cfg.batch_size * self.info.world_size)
        if progress is not None:
            progress.start(self.total_steps, self.step, solves=len(self.schedule))
        batches = iter(loader)
        while self.step < self.total_steps:
            if self.solve_index < len(self.schedule) and self.schedule[self.solve_index] <= self.step:
                if window.steps:  # close the throughput window: the solve is not training time
                    self.log(self._train_row(window))
                self.log(self.solve_labels())
                labels_dev = self.labels.to(self.dev)
                window.reset()
                continue
            t0 = time.perf_counter()
            video, audio, vidx = self.passes.to_device(next(batches))
            wait = time.perf_counter() - t0
            vidx = vidx.to(self.dev)
            window.add(self.train_step(video, audio, labels_dev[:, vidx], has_audio_dev[vidx], self.step), wait)
            self.step += 1
            epoch_end = self.step % spe == 0
            if self.step % cfg.log_every == 0 or self.step == self.total_steps or epoch_end:
                m = self._train_row(window)
                self.log(m)
                if progress is not None:
                    progress.update(self.step, m)
            if D.all_reduce_max(stop.raised, self.dev):
                if window.steps:  # the row of the steps since the last one, before the checkpoint
                    self.log(self._train_row(window))
                return True
            if epoch_end and (self.step // spe) % cfg.checkpoint_every == 0 and self.step < self.total_steps:
                self.save(LAST)
        return False

    def _train_row(self, window: Throughput) -> dict[str, Any]:
        return window.row(self.step, self.step / self.steps_per_epoch, self.lr_at(max(self.step - 1, 0)))

    def finish(self) -> tuple[Path | None, Path | None]:
        """The final model's BatchNorm statistics for inference inputs, the final labels (``final_labels``),
        ``model-final.pt`` and ``labels.parquet`` (their paths)."""
        cfg = self.cfg
        if cfg.precise_bn_clips > 0:
            self.passes.recalibrate_bn(seed_for(cfg.seed, BN, 2), train_aug=False)
        if cfg.final_labels == "features" and self.n >= cfg.num_clusters:
            self.labels, m = distill_labels(self.passes, self.labels, self.has_audio, self.step, self.gt_codes)
            self.log(m)
        elif cfg.final_labels == "features":  # k-means needs K <= N: keep the last solve's labels
            self.log({"event": "distill", "step": self.step, "skipped": f"K={cfg.num_clusters} > "
                      f"{self.n} videos: the last solve's labels are kept"}, keep=False)
        return self.save(FINAL), self.write_labels()


def train(cache_dir: str | Path, out_dir: str | Path, cfg: TrainConfig, *, resume: bool = False,
          gt: str | Path | None = None, device: str | None = None, progress: Any = None) -> TrainSummary:
    """Train SeLaVi on a cache; the library entry point behind ``videolabel train``.

    ``progress``: an object with ``start(total, done)``, ``update(step, metrics)`` and ``stop()`` (see
    :class:`~videolabel.train.progress.TrainProgress`); default: ``TrainProgress(cfg.progress)``."""
    try:
        if progress is None:
            from videolabel.train.progress import TrainProgress

            progress = TrainProgress(cfg.progress)
        trainer = Trainer(cache_dir, out_dir, cfg, resume=resume, gt=gt, device=device,
                          say=getattr(progress, "note", None))
        return trainer.run(progress=progress if trainer.info.is_main else None)
    finally:
        D.teardown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: videolabel train ...")
