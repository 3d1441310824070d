"""Getting image-caption pairs in: uploads, COCO, Conceptual Captions.

Every loader returns ``(pairs, report)``: a list of :class:`Pair` (id, local image file,
caption, source metadata) and a :class:`DataReport` of what was skipped and why.
"""

from .cc import load_cc, load_webdataset
from .coco import load_coco
from .folder import load_folder, save_upload
from .pairs import DataError, DataReport, Pair, require_pairs

__all__ = ["DataError", "DataReport", "Pair", "load_cc", "load_coco", "load_folder",
           "load_webdataset", "require_pairs", "save_upload"]
