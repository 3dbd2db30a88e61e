"""The options of ``videolabel assign`` (a light module: the CLI takes its defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass

from videolabel.errors import VideolabelError

__all__ = ["HEAD_RULES", "METHODS", "MODALITIES", "SPACES", "AssignOptions"]

METHODS = ("selavi", "kmeans")
SPACES = ("joint", "shared")
MODALITIES = ("both", "audio", "visual")
#: label-free rules for the head that fills ``cluster`` (``--head``; an index fixes it instead): "auto" is
#: "objective" for runs whose heads hold k-means restarts of the features (the tiny recipe's
#: ``final_labels: features``) and "agreement" for heads trained on self-labels (the paper's runs);
#: assign_table.head_rule
HEAD_RULES = ("auto", "agreement", "consensus", "objective")


@dataclass
class AssignOptions:
    method: str = "selavi"  # "selavi" (the heads) or "kmeans" (k-means on pooled encoder features)
    modality: str = "both"  # "both", "audio" or "visual"
    # head that fills the top-level `cluster` column: an index or a rule of HEAD_RULES: "agreement" (the
    # frames' and the sound's clusters agree most: cluster.select.choose_head), "consensus" (agrees most with
    # the other heads: consensus_head), "objective" (lowest k-means objective in the run's final space:
    # objective_head) or "auto" (the rule that fits the run)
    head: int | str = "auto"
    clips: int | None = None  # clips per video to average (None: all cached clips)
    degrade: int = 1  # nearest down- then up-sampling of the frames by this factor (paper Fig. 2)
    layout: str = "wide"
    random_init: bool = False  # k-means on a randomly initialised encoder (paper Table 5 baseline)
    k: int | str | None = None  # k-means k (default: the run's K), or "auto" (videolabel.cluster.choosek)
    # k-means: the features' space: "joint" (each modality PCA-whitened; the paper's Table 5 baseline) or
    # "shared" (each modality's canonical variates with the other, videolabel.cluster.cca)
    space: str = "joint"
    # k-means: PCA-whiten each modality's features to this many dims first (0 = L2 only; None: 32 for the
    # joint space, SHARED_PCA = 64 for the shared one)
    pca: int | None = None
    batch_size: int = 64
    workers: int = 4
    seed: int = 0
    features: str | None = None  # also write pooled 512-d features to this Parquet file
    name: str | None = None  # short name for comparison tables

    def validate(self) -> "AssignOptions":
        from videolabel.assignments import LAYOUTS  # local: the CLI reads these defaults without pandas

        if self.method not in METHODS:
            raise VideolabelError(f"--method must be one of {', '.join(METHODS)}")
        if self.modality not in MODALITIES:
            raise VideolabelError(f"--modality must be one of {', '.join(MODALITIES)}")
        if self.layout not in LAYOUTS:
            raise VideolabelError(f"--layout must be one of {', '.join(LAYOUTS)}")
        if self.degrade < 1:
            raise VideolabelError("--degrade must be >= 1")
        if self.clips is not None and self.clips < 1:
            raise VideolabelError("--clips must be >= 1")
        if self.random_init and self.method != "kmeans":
            raise VideolabelError("--random-init only makes sense with --method kmeans")
        if self.batch_size < 1:
            raise VideolabelError("--batch-size must be >= 1")
        if self.workers < 0:
            raise VideolabelError("--workers must be >= 0")
        if self.k is not None and self.k != "auto":
            try:
                self.k = int(self.k)
            except (TypeError, ValueError):
                raise VideolabelError(f"--k must be a number of clusters or auto, got {self.k!r}") from None
            if self.k < 1:
                raise VideolabelError(f"--k must be >= 1, not {self.k}")
        if self.k == "auto" and self.modality != "both":
            raise VideolabelError("--k auto compares the frames with the sound: it needs --modality both")
        if self.k is not None and self.method != "kmeans":
            raise VideolabelError("--k only makes sense with --method kmeans (the run's heads have the run's K)")
        if self.space not in SPACES:
            raise VideolabelError(f"--space must be one of {', '.join(SPACES)}")
        if self.space != "joint" and self.method != "kmeans":
            raise VideolabelError("--space only makes sense with --method kmeans")
        if self.space == "shared" and self.modality != "both":
            raise VideolabelError("--space shared keeps what the frames and the sound share: it needs --modality both")
        if self.pca is None:
            self.pca = 64 if self.space == "shared" else 32
        if self.pca < 0:
            raise VideolabelError("--pca must be >= 0")
        if self.space == "shared" and self.pca == 0:
            raise VideolabelError("--space shared whitens first: --pca must be >= 1")
        if self.head not in HEAD_RULES:
            try:
                self.head = int(self.head)
            except (TypeError, ValueError):
                raise VideolabelError(f"--head must be {', '.join(HEAD_RULES)} or a head index, "
                                      f"got {self.head!r}") from None
        return self
