"""gapviz: measure and close the modality gap between image and text embeddings."""

from .embeddings import (EmbeddingsFileError, LoadReport, PairedEmbeddings, load_embeddings,
                         save_embeddings)
from .measures import GapReport, measure_gap, paired_significance
from .methods import METHODS, make_method
from .simulate import simulate_pairs

__all__ = ["METHODS", "EmbeddingsFileError", "GapReport", "LoadReport", "PairedEmbeddings",
           "load_embeddings", "make_method", "measure_gap", "paired_significance", "save_embeddings",
           "simulate_pairs"]
__version__ = "0.1.0"
