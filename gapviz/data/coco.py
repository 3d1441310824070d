"""COCO captions: a reproducible sample of image-caption pairs, like the paper's COCO-PAIRS.

Accepted annotation inputs (a local path or an http(s) URL):

- the official COCO format, ``captions_val2017.json`` (``images`` + ``annotations``), or the
  annotations zip that holds it (``annotations_trainval2017.zip``);
- the Karpathy split file ``dataset_coco.json`` (``images`` with ``sentences``, ``split``),
  optionally filtered by split (``test``, ``val``, ``train``, ``restval``);
- a parquet listing with one row per image: an image URL column (``coco_url``, ``url``,
  ``image_url``), a caption column (``caption``, ``captions`` or ``sentences``; a list means
  several captions), and optionally ``image_id`` and ``file_name``.

With no annotations given, the official 2017 annotations are downloaded (once, into the cache).
Images come from a local folder when one is given or found beside the annotations, otherwise
only the sampled images are downloaded from images.cocodataset.org (or a mirror).

One caption per image by default: the first in file order, or a seeded random one
(``caption_choice``); ``"all"`` keeps every caption of each sampled image, one pair per caption
grouped by the image (COCO has five): the measures then count any caption as the image's match
(as CLIP_benchmark and Schrodi et al. do), and ``n`` counts images.
"""

from __future__ import annotations

import os
import random
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from .defaults import (CAPTION_CHOICES, COCO_ANNOTATIONS_URL, COCO_ANNOTATIONS_URL_ENV,
                       COCO_IMAGES_URL, COCO_IMAGES_URL_ENV, COCO_SPLIT, MAX_IMAGE_PIXELS,
                       SAMPLE_N, SAMPLE_SEED, VALIDATE_WORKERS, cache_area, cache_root)
from .download import DownloadError, Downloader, fetch_file, is_url
from ..safety import JSONInputError, loads_json
from .pairs import Candidate, DataError, DataReport, Pair, Progress, all_captions, collect_pairs

BAD_IMAGE_RECORD = "unreadable image record in annotations (not an object with an 'id')"
BAD_ANNOTATION = "unreadable caption annotation (not an object with 'image_id' and a text 'caption')"

#: The largest annotation file read from a zip (train2017 captions are ~90 MB).
MAX_ANNOTATION_BYTES = 2 * 1024**3

_URL_COLUMNS = ("coco_url", "url", "image_url", "flickr_url")
_CAPTION_COLUMNS = ("caption", "captions", "sentences", "text")
_ID_COLUMNS = ("image_id", "cocoid", "id")


def load_coco(annotations: str | os.PathLike | None = None, images: str | os.PathLike | None = None,
              *, n: int | None = SAMPLE_N, seed: int = SAMPLE_SEED, caption_choice: str = "first",
              split: str | None = None, cache_dir: str | os.PathLike | None = None,
              annotations_url: str | None = None, images_url: str | None = None,
              download: dict[str, Any] | None = None, max_pixels: int = MAX_IMAGE_PIXELS,
              workers: int = VALIDATE_WORKERS,
              progress: Progress | None = None) -> tuple[list[Pair], DataReport]:
    """A seeded sample of ``n`` COCO image-caption pairs (one caption per image).

    Parameters
    ----------
    annotations : path or URL, optional
        COCO captions JSON, the annotations zip, Karpathy's ``dataset_coco.json``, or a parquet
        listing. Default: download ``annotations_url`` (``$GAPVIZ_COCO_ANNOTATIONS_URL``, else
        the official 2017 annotations).
    images : path, optional
        Folder of the images (``file_name`` inside it, or inside its split folder). Default:
        a split folder beside the annotations if there is one, else download the sampled ones.
    n, seed : int
        Sample size and seed (the paper: 2,500). ``n=None`` keeps all.
    caption_choice : {"first", "random", "all"}
        The first caption of each image in file order, one drawn with ``seed``, or all of
        them (one pair per caption, ``Pair.group`` the image id; ``n`` counts images).
    split : str, optional
        Which captions file in a zip (``val2017``, ``train2017``) or which Karpathy split.
    images_url : str, optional
        Base URL of images (``{base}/{split}/{file_name}``); ``$GAPVIZ_COCO_IMAGES_URL``.
    download : dict, optional
        :class:`~gapviz.data.download.Downloader` settings (``workers``, ``timeout``,
        ``retries``, ...).

    Returns
    -------
    pairs : list of Pair
    report : DataReport
    """
    if caption_choice not in CAPTION_CHOICES:
        raise DataError(f"caption_choice must be one of {CAPTION_CHOICES}, got {caption_choice!r}.")
    root = cache_root(cache_dir)
    settings = dict(download or {})
    report = DataReport()
    # The default download holds several captions files: pick the paper's split in it.
    official = annotations is None and not (annotations_url or os.environ.get(COCO_ANNOTATIONS_URL_ENV))
    ann_path = _annotation_file(annotations, annotations_url, root, settings, progress)
    records, kind = read_annotations(ann_path, split or (COCO_SPLIT if official else None), report)
    if not records:
        raise DataError(f"{ann_path}: no images found" + (f" in split '{split}'" if split else "") + ".")
    image_dir = _image_folder(images, ann_path, records)
    base_url = images_url or os.environ.get(COCO_IMAGES_URL_ENV)
    candidates = []
    for rec in records:
        caption = _choose(rec["captions"], "first" if caption_choice == "all" else caption_choice,
                          seed, rec["id"])
        cand = Candidate(rec["id"], caption, f"image {rec['id']} ({rec['file_name']})",
                         source={"kind": kind, "image_id": rec["id"], "file_name": rec["file_name"],
                                 "annotations": str(ann_path)})
        if rec.get("missing"):
            pass  # a caption whose image is not listed: neither a file nor a URL
        elif image_dir is not None:
            cand.image_path = str(_local_image(image_dir, rec))
        else:
            cand.url = cand.source["url"] = _image_url(rec, base_url)
        candidates.append(cand)
    report.notes.append(
        f"{kind} annotations {ann_path.name}: {len(records)} images; caption: "
        + {"first": "the first of each image's captions (file order)",
           "random": f"one of each image's captions drawn at random (seed {seed})",
           "all": "every caption of each image, one pair each, grouped by image (any caption "
                  "counts as the image's match)"}[caption_choice])
    fetch = None
    if image_dir is None:
        report.notes.append(f"images downloaded from {base_url or 'the URLs in the annotations'}")
        fetch = Downloader(cache_area("downloads", root) / "images", progress=progress, **settings)
    pairs = collect_pairs(candidates, report, n=n, seed=seed, fetch=fetch, max_pixels=max_pixels,
                          workers=workers, progress=progress)
    if caption_choice == "all":
        pairs = all_captions(pairs, {rec["id"]: rec["captions"] for rec in records})
        report.notes.append(f"{len(pairs)} pairs: all captions of the {report.n_kept} images kept")
    from ..cache import enforce_cap  # not at the top: gapviz.cache imports gapviz.data

    enforce_cap(cache_dir, keep=[ann_path, *(p.image_path for p in pairs)])
    return pairs, report


def _annotation_file(annotations: str | os.PathLike | None, url: str | None, root: Path,
                     settings: dict[str, Any], progress: Progress | None) -> Path:
    if annotations is None:
        annotations = url or os.environ.get(COCO_ANNOTATIONS_URL_ENV) or COCO_ANNOTATIONS_URL
    if is_url(str(annotations)):
        try:
            return fetch_file(str(annotations), cache_area("downloads", root), progress=progress,
                              **settings)
        except DownloadError as err:
            raise DataError(
                f"cannot download the COCO annotations from {annotations} ({err.reason}). Offline? "
                "Download them elsewhere and pass the file (captions_val2017.json, the annotations "
                f"zip, or dataset_coco.json), or set {COCO_ANNOTATIONS_URL_ENV} to a mirror.") from None
    path = Path(annotations).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such annotations file.")
    return path


def read_annotations(path: Path, split: str | None,
                     report: DataReport | None = None) -> tuple[list[dict[str, Any]], str]:
    """Image records ``{id, file_name, folder, url, captions}`` and the format's name.

    ``folder`` is the split folder images live in (``val2017``), when known. Records and
    annotations that are not what the format says (not objects, no id) are skipped and counted
    in ``report``; a file whose structure is wrong (``"images": 5``) raises :class:`DataError`.
    """
    report = report if report is not None else DataReport()
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_listing(path), "coco-listing"
    if zipfile.is_zipfile(path):
        data, member = _json_from_zip(path, split)
        stem = PurePosixPath(member).stem
    else:
        try:
            data = loads_json(path.read_bytes())
        except JSONInputError as err:
            raise DataError(f"{path}: not a readable JSON file ({err}).") from None
        stem = path.stem
    if isinstance(data, dict) and "images" in data:
        for key in ("images", "annotations"):
            if key in data and not isinstance(data[key], list):
                raise DataError(f"{path}: '{key}' must be a list of records, got a JSON "
                                f"{_json_kind(data[key])}; check the file is COCO captions JSON.")
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        folder = stem.split("captions_", 1)[1] if stem.startswith("captions_") else None
        return _read_coco(data, folder, path, report), "coco"
    if isinstance(data, dict) and "images" in data and any(
            isinstance(im, dict) and "sentences" in im for im in data["images"][:10]):
        return _read_karpathy(data, split, report), "karpathy"
    raise DataError(f"{path}: neither COCO captions (keys 'images' and 'annotations') nor a Karpathy "
                    "split file (images with 'sentences').")


def _json_kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def _text(value: Any) -> str | None:
    """A caption or name from JSON: text and numbers as text; objects and lists are not text."""
    if isinstance(value, (dict, list)) or value is None:
        return None
    return str(value)


def _json_from_zip(path: Path, split: str | None) -> tuple[Any, str]:
    """The captions JSON inside an annotations zip, read without extracting anything.

    With ``split``: ``captions_<split>.json``, else ``dataset_coco.json`` (Karpathy, filtered
    by split later). Without: a ``captions_val*`` file first, any ``captions_*`` next, then
    ``dataset_coco.json``.
    """
    with zipfile.ZipFile(path) as zf:
        by_name: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            if not info.is_dir():
                by_name.setdefault(PurePosixPath(info.filename.replace("\\", "/")).name, info)
        captions = sorted((name for name in by_name if name.startswith("captions_")
                           and name.endswith(".json")), key=lambda name: ("val" not in name, name))
        if split:
            order = [f"captions_{split}.json", "dataset_coco.json"]
        else:
            order = captions + ["dataset_coco.json"]
        info = next((by_name[name] for name in order if name in by_name), None)
        if info is None:
            found = captions + (["dataset_coco.json"] if "dataset_coco.json" in by_name else [])
            raise DataError(f"{path}: no captions_{split or '*'}.json or dataset_coco.json inside "
                            f"this zip (found {found or 'no captions file'}).")
        if info.file_size > MAX_ANNOTATION_BYTES:
            raise DataError(f"{path}: {info.filename} would expand to {info.file_size:,} bytes; "
                            "that is not a captions file.")
        try:
            return loads_json(zf.read(info)), info.filename
        except (JSONInputError, zipfile.BadZipFile, OSError, EOFError, NotImplementedError,
                RuntimeError) as err:
            raise DataError(f"{path}: {info.filename} is not readable JSON ({err}).") from None


def _read_coco(data: dict[str, Any], folder: str | None, path: Path,
               report: DataReport) -> list[dict[str, Any]]:
    captions: dict[str, list[str]] = {}
    for number, ann in enumerate(data["annotations"]):
        ident = _text(ann.get("image_id")) if isinstance(ann, dict) else None
        caption = _text(ann.get("caption", "")) if isinstance(ann, dict) else None
        if ident is None or caption is None:
            report.skip(BAD_ANNOTATION, f"annotation {number}")
            continue
        captions.setdefault(ident, []).append(caption)
    records = []
    seen: set[str] = set()
    for number, im in enumerate(data["images"]):
        ident = _text(im.get("id")) if isinstance(im, dict) else None
        if ident is None:
            report.skip(BAD_IMAGE_RECORD, f"image record {number}")
            continue
        seen.add(ident)
        url = _text(im.get("coco_url")) or _text(im.get("flickr_url")) or ""
        records.append({"id": ident, "file_name": _text(im.get("file_name")) or "",
                        "folder": folder or (PurePosixPath(url).parent.name if url else None),
                        "url": url, "captions": captions.get(ident)})
    # Captions whose image is not listed become candidates without an image, so the report
    # counts them ("caption without image") if the sample reaches them.
    for ident in sorted(set(captions) - seen, key=_natural):
        records.append({"id": ident, "file_name": "", "folder": None, "url": "",
                        "captions": captions[ident], "missing": True})
    return records


def _read_karpathy(data: dict[str, Any], split: str | None,
                   report: DataReport) -> list[dict[str, Any]]:
    records = []
    for number, im in enumerate(data["images"]):
        ident = (_text(im.get("cocoid", im.get("imgid", im.get("filename", ""))))
                 if isinstance(im, dict) else None)
        if ident is None:
            report.skip(BAD_IMAGE_RECORD, f"image record {number}")
            continue
        if split and im.get("split") != split:
            continue
        sentences = []
        for sentence in im.get("sentences") if isinstance(im.get("sentences"), list) else []:
            if not isinstance(sentence, dict):
                continue
            raw = _text(sentence.get("raw"))
            tokens = sentence.get("tokens")
            if raw is None and isinstance(tokens, list):
                raw = " ".join(t for t in tokens if isinstance(t, str))
            if raw is not None:
                sentences.append(raw)
        folder = _text(im.get("filepath"))
        records.append({"id": ident, "file_name": _text(im.get("filename")) or "",
                        "folder": PurePosixPath(folder).name if folder else None, "url": "",
                        "captions": sentences})
    return records


def _read_listing(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for unreadable files
        raise DataError(f"{path}: not a readable parquet file ({err}).") from None
    cols = {c.lower(): c for c in table.column_names}
    url_col = next((cols[c] for c in _URL_COLUMNS if c in cols), None)
    cap_col = next((cols[c] for c in _CAPTION_COLUMNS if c in cols), None)
    id_col = next((cols[c] for c in _ID_COLUMNS if c in cols), None)
    if url_col is None or cap_col is None:
        raise DataError(f"{path}: found columns {table.column_names}; a listing needs an image URL "
                        f"column ({', '.join(_URL_COLUMNS)}) and a caption column "
                        f"({', '.join(_CAPTION_COLUMNS)}).")
    urls = table.column(url_col).to_pylist()
    caps = table.column(cap_col).to_pylist()
    ids = table.column(id_col).to_pylist() if id_col else list(range(len(urls)))
    names = table.column(cols["file_name"]).to_pylist() if "file_name" in cols else [None] * len(urls)
    records = []
    for ident, url, cap, name in zip(ids, urls, caps, names):
        if isinstance(cap, dict):
            cap = cap.get("raw")
        if isinstance(cap, list):
            captions = [t for t in (_text(c.get("raw", "")) if isinstance(c, dict) else _text(c)
                                    for c in cap) if t is not None]
        else:
            captions = None if _text(cap) is None else [str(cap)]
        url = url if isinstance(url, str) else ""
        name = name if isinstance(name, str) else ""
        records.append({"id": str(ident), "file_name": name or PurePosixPath(url).name,
                        "folder": None, "url": url, "captions": captions, "missing": not url})
    return records


def _choose(captions: list[str] | None, choice: str, seed: int, ident: str) -> str | None:
    """One caption; a "random" choice depends only on (seed, image id), not on the sample."""
    if not captions:
        return None
    if choice == "first":
        return captions[0]
    return random.Random(f"{seed}:{ident}").choice(captions)


def _image_folder(images: str | os.PathLike | None, ann_path: Path,
                  records: list[dict[str, Any]]) -> Path | None:
    if images is not None:
        folder = Path(images).expanduser()
        if not folder.is_dir():
            raise DataError(f"{folder}: no such image folder.")
        return folder
    # A standard COCO layout keeps annotations/ next to val2017/: use it when it is there.
    split_dirs = {r["folder"] for r in records if r.get("folder")}
    for parent in (ann_path.parent, ann_path.parent.parent):
        for split_dir in split_dirs:
            if (parent / split_dir).is_dir():
                return parent
    return None


def _local_image(folder: Path, rec: dict[str, Any]) -> Path:
    name = PurePosixPath(rec["file_name"].replace("\\", "/")).name  # never leave the folder
    if rec.get("folder"):
        nested = folder / PurePosixPath(rec["folder"]).name / name
        if nested.is_file():
            return nested
    return folder / name


def _image_url(rec: dict[str, Any], base: str | None) -> str:
    if base:
        parts = [base.rstrip("/")] + ([rec["folder"]] if rec.get("folder") else []) + [rec["file_name"]]
        return "/".join(parts)
    if rec.get("url"):
        return rec["url"]
    folder = rec.get("folder") or COCO_SPLIT
    return f"{COCO_IMAGES_URL}/{folder}/{rec['file_name']}"


def _natural(value: str) -> tuple[int, str]:
    return (int(value), "") if value.isdigit() else (1 << 62, value)
