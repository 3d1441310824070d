"""gapviz: measure and close the modality gap between image and text embeddings."""

from .embeddings import (EmbeddingsFileError, LoadReport, PairedEmbeddings, load_embeddings,
                         save_embeddings)
from .measures import GapReport, measure_gap, paired_significance

__all__ = ["EmbeddingsFileError", "GapReport", "LoadReport", "PairedEmbeddings", "load_embeddings",
           "measure_gap", "paired_significance", "save_embeddings"]
__version__ = "0.1.0"
