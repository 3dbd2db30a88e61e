"""videolabel: label an unlabelled video collection from scratch with SeLaVi (NeurIPS 2020)."""

__version__ = "0.1.0"
