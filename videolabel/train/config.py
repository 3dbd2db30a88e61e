"""The training configuration: defaults from the paper (method.md), files (YAML/TOML/JSON) and flags."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from videolabel.errors import VideolabelError, first_line
from videolabel.train.progress import PROGRESS_MODES

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the package tomli (a dependency there)
    import tomli as tomllib

PRIORS = ("uniform", "gaussian", "adaptive")
#: "both": SeLaVi; "video" / "audio": SeLa on one modality; "concat": one head set on the concatenated
#: features of both encoders (the paper's Table 3(b) baseline).
MODALITIES = ("both", "video", "audio", "concat")
#: Fields that may change when a run is resumed: they do not change what is computed.
RUNTIME_FIELDS = frozenset({"workers", "log_every", "compile", "checkpoint_every", "progress", "prefetch"})


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a SeLaVi run (paper values by default; see method.md "Training loop")."""

    preset: str = "paper"  # model/input preset: "paper" (R(2+1)D-18 + ResNet-9) or "tiny"
    num_clusters: int = 100  # K
    num_heads: int = 10  # H clustering heads per modality
    head_layers: int = 2  # 2: Linear-BN-ReLU-Linear (paper); 1: one linear layer on the features
    epochs: int = 200
    batch_size: int = 16  # clips per process (per GPU)
    lr: float = 0.01  # per 16-clip batch; scaled linearly with the global batch
    warmup_epochs: float = 10.0
    lr_schedule: str = "constant"  # after warm-up: "constant" or "cosine"
    optimizer: str = "sgd"  # "sgd" (paper) or "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-5
    lam: float = 20.0  # Sinkhorn lambda (eq. 3)
    n_solves: int = 100  # clustering solves over the run
    schedule_power: float = 1.5  # solve i at fraction (i / (n_solves - 1)) ** power of all steps
    sinkhorn_tol: float = 1e-4  # max relative error of the cluster marginals (labels are argmaxes)
    sinkhorn_iters: int = 1000
    prior: str = "uniform"  # "uniform", "gaussian", "adaptive" (the model's predicted masses), or a file of K masses
    prior_sigma: float = 0.1
    align: bool = True  # modality alignment (eq. 7) once before training
    align_proposals: int = 50000
    align_restarts: int = 5
    decorrelate: bool = True  # two label-pass augmentations, half the heads on each
    # before eq. 6, rescale each modality's log-probabilities to the same spread (not in the paper): the
    # sharper tower no longer decides the labels alone (docs/method.md, AV-Digits findings)
    balance_modalities: bool = False
    # BatchNorm statistics in label passes: "precise" (recomputed over precise_bn_clips clips at the
    # current weights before each pass), "eval" (the running averages) or "batch" (each batch's own)
    label_bn: str = "precise"
    # inputs of the label passes: "train" (each clip under a train-time augmentation, the paper's eq. 6
    # mean over t) or "eval" (the inference inputs, un-augmented: less label noise; not in the paper)
    label_inputs: str = "train"
    # the labels a run ends with: "heads" (the last solve's, paper) or "features" (k-means on the final
    # encoders' pooled features, distilled into the heads; not in the paper: on CPU budgets the heads'
    # labels lag the features by 25-40 NMI points, docs/method.md "The tiny recipe"); with more clusters
    # than videos the last solve's labels are kept
    final_labels: str = "heads"
    distill_epochs: int = 40  # final_labels="features": epochs of head-only training on the k-means labels
    # final_labels="features": the space of that k-means: "joint" (each modality PCA-whitened) or "shared"
    # (each modality's canonical variates with the other: only what frames and sound vary in together;
    # not in the paper, docs/method.md "What both streams share")
    final_space: str = "joint"
    # final_labels="features": the weight of each stream's features in that k-means: "equal", or "auto" (the
    # stream whose own clusters the other stream sees less counts less when the two share little; not in the
    # paper: videolabel.cluster.weights, docs/method.md "Stream weights in the final labels")
    stream_weights: str = "equal"
    precise_bn_clips: int = 2048  # also recomputed for inference at the end of training; 0 = never
    modalities: str = "both"  # "both", "video" (SeLa on frames), "audio", "concat" (Table 3(b) baseline)
    log_floor: float = 1.0  # spectrogram floor: log(mel + floor) (method.md, speaker shortcut)
    # "fixed": the recording's own level over the fixed floor; "auto": each spectrogram's peak set to one level and
    # its floor raised, band by band, to its own background noise; "video": one gain that brings a quietly (or
    # loudly) recorded collection to the usual level, and each video's floor raised to its own background, from
    # all its clips; a collection at a usual level over quiet backgrounds is left exactly as it is (training and
    # inference; not in the paper; videolabel/data/levels.py)
    audio_level: str = "fixed"
    audio_shift: float = 0.0  # circular time shift of training spectrograms, fraction of frames (0 = paper)
    flip: bool = True  # random horizontal flip of training clips (paper); off for content with a handedness
    color_jitter: float = 0.4  # brightness/contrast jitter of training clips (0 = paper: crop and flip only)
    # what of each frame the video tower sees: "square" (the short side's square, paper) or "full" (the
    # whole frame squeezed to the square: nothing near the edge of a wide or tall frame is cut away)
    video_view: str = "square"
    gray: bool = False  # frames as luminance only: ink and paper colours cannot carry a label (not in the paper)
    invert: float = 0.0  # probability of reversing a training clip's polarity, x -> 1 - x (not in the paper)
    # "keep", or "skew": in training and inference, a clip whose luminance is negatively skewed (a subject darker
    # than its background) is reversed, so both polarities look the same to the tower (not in the paper)
    polarity: str = "keep"
    # training: the upper end of the short side's random size, in pixels (0: the preset's scale_jitter); a
    # wider range zooms in further, so that the size of the subject in a source's frames varies within a video
    scale_jitter_max: int = 0
    # training: per clip, Gaussian blur of sigma ~ U[0, blur] model-input pixels, then noise of std ~ U[0,
    # pixel_noise] in normalised units, so that a source's sharpness and grain (its camera, codec and frame
    # size) cannot carry its label (not in the paper; docs/method.md "Nuisances of the file")
    blur: float = 0.0
    pixel_noise: float = 0.0
    video_norm: str = "fixed"  # "fixed" (0.45/0.225, paper) or "clip" (each clip standardised)
    audio_norm: str = "fixed"  # "fixed" ((x - log floor) / 4) or "sample" (each spectrogram standardised)
    specaugment: bool = True
    # training: SpecAugment's masks per axis (frequency bands and time spans, each up to 1/8 of its axis)
    spec_masks: int = 2
    audio_warp: float = 0.0  # training spectrograms' frequency and time stretched by U[1 -/+ w] (not in the paper)
    eval_batch_size: int = 64
    workers: int = 4  # loader processes per training process
    prefetch: int = 4
    amp: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True  # channels-last weights (3D: channels_last_3d); channels-last-3d inputs on CUDA
    compile: bool = False  # torch.compile the encoders
    sync_bn: bool = True  # SyncBatchNorm across processes (CUDA only)
    seed: int = 0
    deterministic: bool = False
    checkpoint_every: int = 1  # epochs
    log_every: int = 10  # steps
    progress: str = "auto"  # "auto", "rich", "log", "none"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "TrainConfig":
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise VideolabelError(f"bad train config: {msg}")

        from videolabel.data.augment import LEVELS, POLARITIES  # local: the config stays light (no torch) until checked
        from videolabel.models.presets import PRESETS

        need(self.preset in PRESETS, f"unknown preset {self.preset!r} (choose from {', '.join(PRESETS)})")
        need(self.num_clusters >= 2, "num_clusters must be >= 2")
        need(self.num_heads >= 1, "num_heads must be >= 1")
        need(self.head_layers in (1, 2), "head_layers must be 1 or 2")
        need(self.epochs >= 1, "epochs must be >= 1")
        need(self.batch_size >= 1, "batch_size must be >= 1")
        need(self.lr > 0, "lr must be > 0")
        need(self.warmup_epochs >= 0, "warmup_epochs must be >= 0")
        need(self.lr_schedule in ("constant", "cosine"), "lr_schedule must be constant or cosine")
        need(self.lam > 0, "lam must be > 0")
        need(self.optimizer in ("sgd", "adamw"), "optimizer must be sgd or adamw")
        need(self.label_bn in ("precise", "eval", "batch"), "label_bn must be precise, eval or batch")
        need(self.label_inputs in ("train", "eval"), "label_inputs must be train or eval")
        need(self.final_labels in ("heads", "features"), "final_labels must be heads or features")
        need(self.distill_epochs >= 1, "distill_epochs must be >= 1")
        need(self.final_space in ("joint", "shared"), "final_space must be joint or shared")
        need(self.stream_weights in ("equal", "auto"), "stream_weights must be equal or auto")
        need(self.precise_bn_clips >= 0, "precise_bn_clips must be >= 0")
        need(self.label_bn != "precise" or self.precise_bn_clips >= 2, "label_bn=precise needs precise_bn_clips >= 2")
        need(self.n_solves >= 1, "n_solves must be >= 1")
        need(self.schedule_power > 0, "schedule_power must be > 0")
        need(self.prior in PRIORS or Path(self.prior).is_file(), f"prior {self.prior!r} is neither "
             f"{' nor '.join(PRIORS)} nor an existing file")
        need(self.modalities in MODALITIES, f"modalities must be {', '.join(MODALITIES[:-1])} or {MODALITIES[-1]}")
        need(self.log_floor >= 0, "log_floor must be >= 0")
        need(0 <= self.color_jitter < 1, "color_jitter must be in [0, 1)")
        need(0 <= self.audio_shift <= 1, "audio_shift must be in [0, 1]")
        need(0 <= self.audio_warp < 1, "audio_warp must be in [0, 1)")
        need(self.video_norm in ("fixed", "clip"), "video_norm must be fixed or clip")
        need(self.video_view in ("square", "full"), "video_view must be square or full")
        need(0 <= self.invert <= 1, "invert must be in [0, 1]")
        need(self.polarity in POLARITIES, f"polarity must be one of {', '.join(POLARITIES)}")
        need(self.audio_level in LEVELS, f"audio_level must be one of {', '.join(LEVELS)}")
        need(self.scale_jitter_max == 0 or self.scale_jitter_max >= PRESETS[self.preset].scale_jitter[0],
             f"scale_jitter_max must be 0 (the preset's) or >= the preset's lower end, "
             f"{PRESETS[self.preset].scale_jitter[0]}")
        need(0 <= self.blur <= 8, "blur must be in [0, 8]")
        need(self.pixel_noise >= 0, "pixel_noise must be >= 0")
        need(self.audio_norm in ("fixed", "sample"), "audio_norm must be fixed or sample")
        need(0 <= self.spec_masks <= 8, "spec_masks must be in [0, 8]")
        need(self.workers >= 0, "workers must be >= 0")
        need(self.eval_batch_size >= 1, "eval_batch_size must be >= 1")
        need(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
        need(self.log_every >= 1, "log_every must be >= 1")
        need(self.progress in PROGRESS_MODES, f"progress must be one of {', '.join(PROGRESS_MODES)}")
        return self


#: The ``tiny`` preset's recipe: what its runs default to (then a config file, then flags win). Tuned on
#: CPU-sized AV-Digits sets against a supervised ceiling (benchmarks/ceiling.py) and checked on a
#: development set of other voices and pictures; each value and its measurement is in docs/method.md
#: ("The tiny recipe"). The ``paper`` preset keeps the paper's values (the dataclass defaults).
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {
        "num_heads": 5,
        "epochs": 30,
        "batch_size": 32,
        "optimizer": "adamw",
        "lr": 0.001,  # per 16 clips: 0.002 at batch 32 (AdamW)
        "lr_schedule": "cosine",
        "warmup_epochs": 1.0,
        "n_solves": 40,
        "schedule_power": 2.0,
        "balance_modalities": True,
        "label_inputs": "eval",
        "final_labels": "features",
        "final_space": "shared",
        "label_bn": "batch",
        "decorrelate": False,
        "video_norm": "clip",
        "video_view": "full",  # the whole frame: on square frames (AV-Digits) the same box, bit for bit
        "color_jitter": 0.4,
        "flip": False,
        # the file's nuisances vary within a video (measured on a collection of mixed files, method.md)
        "scale_jitter_max": 64,
        "blur": 1.5,
        "pixel_noise": 0.5,
        # one SpecAugment mask per axis, not two: the sound tower learns more in few steps, the self-labels
        # hold (method.md, "One SpecAugment mask per axis")
        "spec_masks": 1,
        # one gain for a quietly (or loudly) recorded collection, each video's floor at its own background: a
        # collection at a usual level over quiet backgrounds is left exactly as it is (method.md, "Quiet
        # recordings and loud backgrounds")
        "audio_level": "video",
        # the final k-means weighs down the stream whose clusters the other stream sees less, when the two share
        # little (a soundtrack that does not follow the picture); where they share much, as on AV-Digits, the
        # weights stay near 1 (method.md, "Stream weights in the final labels")
        "stream_weights": "auto",
        "align_proposals": 5000,
        "precise_bn_clips": 1024,
    },
}


#: Presets whose ``n_solves`` are for their own ``epochs``: a shorter run of one that sets no ``n_solves`` of
#: its own gets the same density of solves per epoch (:func:`solves_for_epochs`). For ``tiny``, 40 solves over
#: 30 epochs; at 3, 6 and 12 epochs that density labelled as well as 40 solves in a third to two thirds of
#: the time (benchmarks/RESULTS.md, "Label solves that follow the run's length").
SOLVES_FOLLOW_EPOCHS: frozenset[str] = frozenset({"tiny"})


def solves_for_epochs(epochs: int, n_solves: int, solve_epochs: int) -> int:
    """Label solves for a run of ``epochs`` epochs, at the density of ``n_solves`` over ``solve_epochs``.

    The count is ``ceil(n_solves * epochs / solve_epochs)``, at least 2 (the solve at step 0 and one
    after some training) and at most ``n_solves``: a longer run keeps the preset's count (its 60-epoch
    figures were measured with it). The solves are then spread over the run by the paper's power-law
    schedule (:func:`videolabel.cluster.schedule.clustering_schedule`).

    >>> [solves_for_epochs(e, 40, 30) for e in (1, 3, 6, 12, 30, 60)]
    [2, 4, 8, 16, 40, 40]
    """
    if epochs < 1 or n_solves < 1 or solve_epochs < 1:
        raise ValueError(f"epochs, n_solves and solve_epochs must be >= 1, got {epochs}, {n_solves}, {solve_epochs}")
    return max(min(2, n_solves), min(n_solves, math.ceil(n_solves * epochs / solve_epochs)))


def parse_settings(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``--set KEY=VALUE`` items as settings (``-`` in a key read as ``_``; values kept as text, for
    :func:`make_config` to convert). Raises :class:`VideolabelError` on an item without ``=``."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise VideolabelError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, TOML or JSON file into a flat dict (a ``train:`` section is accepted too)."""
    p = Path(path)
    if not p.is_file():
        raise VideolabelError(f"config file not found: {p}")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise VideolabelError(f"cannot parse config file {p}: {first_line(exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise VideolabelError(f"config file {p} must hold a mapping of settings")
    if "train" in data and isinstance(data["train"], dict):
        data = data["train"]
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def make_config(file_values: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the preset's recipe (:data:`PRESET_DEFAULTS`), then a config file's values, then
    flags (``None`` values in overrides are ignored)."""
    names = {f.name: f for f in fields(TrainConfig)}
    merged: dict[str, Any] = {}
    preset = TrainConfig.preset
    for values in (file_values or {}, overrides or {}):
        if values.get("preset") is not None:
            preset = str(values["preset"])
    for source, values in (("preset", PRESET_DEFAULTS.get(preset, {})), ("config file", file_values or {}),
                           ("flags", overrides or {})):
        for key, value in values.items():
            if value is None:
                continue
            if key not in names:
                raise VideolabelError(f"unknown setting in {source}: {key}")
            merged[key] = _coerce(key, value)
    given = {k for values in (file_values or {}, overrides or {}) for k, v in values.items() if v is not None}
    if preset in SOLVES_FOLLOW_EPOCHS and "n_solves" not in given:
        # the preset's solves are for its own length: a shorter run gets the same density (not in the paper)
        recipe = PRESET_DEFAULTS[preset]
        merged["n_solves"] = solves_for_epochs(merged["epochs"], recipe["n_solves"], recipe["epochs"])
    return TrainConfig(**merged).validate()


def _coerce(key: str, value: Any) -> Any:
    default = TrainConfig.__dataclass_fields__[key].default
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise VideolabelError(f"bad value for {key}: {value!r}") from None


def as_saved(values: dict[str, Any]) -> dict[str, Any]:
    """A saved run's config values, with every setting added since the run was trained at its dataclass default:
    the behaviour of then, as :func:`diff_configs` compares it. ``make_config(as_saved(v))`` is the run's config
    (a ``tiny`` run saved before ``stream_weights`` resumes with ``equal``, not the recipe's ``auto``)."""
    return {**TrainConfig().to_dict(), **values}


def diff_configs(old: dict[str, Any], new: TrainConfig) -> list[str]:
    """Settings that differ between a saved run and a new request, ignoring runtime-only ones.

    A setting the saved run lacks was added after it was trained, with a dataclass default that keeps the
    behaviour of before: the run is compared as having that default (a ``tiny`` run saved before
    ``spec_masks`` trained with 2 masks, and resuming it under the recipe's 1 is refused).
    """
    out = []
    saved = as_saved(old)
    for key, value in new.to_dict().items():
        if key in RUNTIME_FIELDS:
            continue
        had = saved[key]
        if had != value:
            out.append(f"{key}: run has {had!r}, asked {value!r}" + ("" if key in old else " (the default then)"))
    return out
