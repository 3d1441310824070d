"""Uploads: folders and zips, .txt-beside and captions-file layouts, every kind of bad input."""

import json
import zipfile

import pytest

from datafixtures import (TXT_FOLDER_SKIPS, add_zip_symlink, image_bytes, make_txt_folder,
                          make_zip_bomb, skip_counts, write_image, zip_folder)
from gapviz.data import DataError, load_folder, save_upload
from gapviz.data.archives import ArchiveLimits, safe_path


def test_txt_beside_each_image(tmp_path):
    expected = make_txt_folder(tmp_path / "up")
    pairs, report = load_folder(tmp_path / "up", cache_dir=tmp_path / "cache")
    assert {p.id: p.caption for p in pairs} == expected
    assert skip_counts(report) == TXT_FOLDER_SKIPS
    assert report.n_kept == len(expected)
    assert report.n_read == len(expected) + sum(TXT_FOLDER_SKIPS.values())
    # Every kept image really is a file of the upload, and the source says where it came from.
    for pair in pairs:
        assert pair.image_path == str(tmp_path / "up" / pair.id)
        assert pair.source == {"kind": "folder", "root": str(tmp_path / "up"), "file": pair.id}
    assert pairs[0].open_image().mode == "RGB"
    # The report names the skipped files so a person can find them.
    text = "\n".join(report.lines())
    for name in ("nocap.jpg", "orphan.txt", "trunc.jpg", "drawing.svg", "bomb.png", "latin1.jpg"):
        assert name in text


def test_captions_csv(tmp_path):
    up = tmp_path / "up"
    for i in range(4):
        write_image(up / "imgs" / f"{i}.jpg", seed=i)
    write_image(up / "imgs" / "unlisted.jpg", seed=9)
    (up / "captions.csv").write_text(
        "file_name,caption,id\n"
        'imgs/0.jpg,"A photo, with a comma.",p0\n'
        "imgs/1.jpg,A second photo.,p1\n"
        "imgs/2.jpg,A duplicate id.,p1\n"          # duplicate id
        "imgs/3.jpg,,p3\n"                          # empty caption
        "imgs/missing.jpg,No file.,p4\n"            # caption without image
        "../outside.jpg,Escapes the folder.,p5\n"   # unsafe path: never read
        "/etc/passwd,Absolute path.,p6\n"
        ",No image name.,p7\n", encoding="utf-8")
    pairs, report = load_folder(up)
    assert [(p.id, p.caption) for p in pairs] == [("p0", "A photo, with a comma."),
                                                  ("p1", "A second photo.")]
    counts = skip_counts(report)
    assert counts["duplicate id"] == 1 and counts["empty caption"] == 1
    assert counts["caption without image"] == 1 and counts["image without caption"] == 1
    assert len(report.skipped["image path leaves the upload folder (absolute or '..')"]) == 2
    assert len(report.skipped["captions-file row without an image name"]) == 1


def test_captions_tsv_keeps_bare_quotes_and_jsonl_skips_bad_lines(tmp_path):
    up = tmp_path / "up"
    write_image(up / "a.png", "PNG")
    write_image(up / "b.png", "PNG", seed=1)
    (up / "captions.tsv").write_text('image\tcaption\na.png\tA "so-called" cat.\nb.png\tA dog.\n')
    pairs, _ = load_folder(up)
    assert [p.caption for p in pairs] == ['A "so-called" cat.', "A dog."]
    (up / "captions.tsv").unlink()
    (up / "captions.jsonl").write_text(json.dumps({"image": "a.png", "caption": "A cat."}) + "\n"
                                       + "{not json\n"
                                       + json.dumps({"image": "b.png", "caption": "A dog."}) + "\n")
    pairs, report = load_folder(up)
    assert [p.caption for p in pairs] == ["A cat.", "A dog."]
    assert len(report.skipped["unreadable row in captions file"]) == 1


def test_non_utf8_rows_skip_only_themselves(tmp_path):
    up = tmp_path / "up"
    write_image(up / "a.jpg")
    write_image(up / "b.jpg", seed=1)
    (up / "captions.csv").write_bytes(b"image,caption\na.jpg,Caf\xe9 latin-1\nb.jpg,Fine \xc3\xa9t\xc3\xa9\n")
    pairs, report = load_folder(up)
    assert [p.caption for p in pairs] == ["Fine \u00e9t\u00e9"]
    assert skip_counts(report) == {"caption is not valid UTF-8": 1}


def test_whole_input_errors_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_folder(tmp_path / "nothing")
    write_image(tmp_path / "up" / "a.jpg")
    with pytest.raises(DataError, match=r"captions\.csv.*\.txt beside each image"):
        load_folder(tmp_path / "up")
    (tmp_path / "up" / "captions.csv").write_text("path,text_en\na.jpg,x\n")
    with pytest.raises(DataError, match=r"found columns \['path', 'text_en'\].*'caption'"):
        load_folder(tmp_path / "up")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_folder(tmp_path / "empty")


def test_zip_gives_the_same_pairs_as_the_folder(tmp_path):
    expected = make_txt_folder(tmp_path / "up")
    archive = zip_folder(tmp_path / "up", tmp_path / "up.zip")
    pairs, report = load_folder(archive, cache_dir=tmp_path / "cache")
    assert {p.id: p.caption for p in pairs} == expected
    assert skip_counts(report) == TXT_FOLDER_SKIPS
    for pair in pairs:
        assert pair.image_path.startswith(str(tmp_path / "cache" / "extracted"))
        assert pair.source["kind"] == "zip" and pair.source["archive"] == str(archive)
    # A second load reuses the extraction.
    again, _ = load_folder(archive, cache_dir=tmp_path / "cache")
    assert [p.image_path for p in again] == [p.image_path for p in pairs]


def test_zip_slip_entries_are_never_written(tmp_path):
    make_txt_folder(tmp_path / "up")
    hostile = {
        "../evil.jpg": image_bytes("JPEG"),
        "../../evil2.jpg": image_bytes("JPEG"),
        "/tmp/abs-evil.jpg": image_bytes("JPEG"),
        "upload\\..\\..\\win-evil.jpg": image_bytes("JPEG"),
        "C:/drive-evil.jpg": image_bytes("JPEG"),
    }
    (tmp_path / "box").mkdir()
    archive = zip_folder(tmp_path / "up", tmp_path / "box" / "up.zip", extra=hostile)
    add_zip_symlink(archive, "upload/link.jpg", "/etc/passwd")
    cache = tmp_path / "box" / "cache"
    pairs, report = load_folder(archive, cache_dir=cache)
    assert len(report.skipped["unsafe path in archive (absolute or '..'; not extracted)"]) == 5
    assert len(report.skipped["link or special file in archive (not extracted)"]) == 1
    # Nothing landed outside the cache folder, nor anywhere by an absolute name.
    outside = [p for p in (tmp_path / "box").rglob("*") if cache not in p.parents and p != cache]
    assert sorted(p.name for p in outside) == ["up.zip"]
    assert not any("evil" in p.name for p in tmp_path.rglob("*"))
    assert not (tmp_path.parent / "evil.jpg").exists()
    assert not any(p.is_symlink() for p in cache.rglob("*"))
    assert len(pairs) == 6


def test_zip_bomb_is_refused_before_extracting(tmp_path):
    bomb = make_zip_bomb(tmp_path / "bomb.zip", megabytes=120)
    assert bomb.stat().st_size < 1024 * 1024
    with pytest.raises(DataError, match=r"zip bomb.*Nothing was extracted"):
        load_folder(bomb, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.jpg"))
    with pytest.raises(DataError, match="GiB limit"):
        load_folder(bomb, cache_dir=tmp_path / "cache", limits=ArchiveLimits(max_bytes=10 * 1024**2))


def test_corrupt_zip_is_a_clear_error(tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(DataError, match="not a readable zip or tar archive"):
        load_folder(tmp_path / "bad.zip", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("name, expected", [
    ("a/b.jpg", "a/b.jpg"), ("./a//b.jpg", "a/b.jpg"), ("a\\b.jpg", "a/b.jpg"),
    ("../a.jpg", None), ("a/../../b", None), ("/etc/passwd", None), ("C:\\x.jpg", None),
    ("\\\\server\\share", None), ("", None), (".", None),
])
def test_safe_path(name, expected):
    result = safe_path(name)
    assert (None if result is None else result.as_posix()) == expected


def test_sampling_is_reproducible_and_keeps_its_size(tmp_path):
    up = tmp_path / "up"
    rows = ["image,caption"]
    for i in range(30):
        if i % 3 == 0:
            (up / f"{i}.jpg").parent.mkdir(parents=True, exist_ok=True)
            (up / f"{i}.jpg").write_bytes(b"broken")  # a third are corrupt
        else:
            write_image(up / f"{i}.jpg", seed=i, size=(16, 16))
        rows.append(f"{i}.jpg,photo {i}")
    (up / "captions.csv").write_text("\n".join(rows))
    first, report = load_folder(up, n=8, seed=3)
    again, _ = load_folder(up, n=8, seed=3)
    other, _ = load_folder(up, n=8, seed=4)
    assert len(first) == 8 and [p.id for p in first] == [p.id for p in again]
    assert [p.id for p in other] != [p.id for p in first]
    # The skipped corrupt ones were replaced; the report counts exactly those examined.
    assert report.n_kept == 8 and report.n_read == 8 + len(report.skipped["corrupt or truncated image"])
    assert any("random sample of 8 from 30" in note for note in report.notes)
    ids = {p.id for p in first}
    assert all(int(i.split(".")[0]) % 3 for i in ids)


def test_zip_with_captions_csv_in_top_folder(tmp_path):
    up = tmp_path / "up"
    for i in range(3):
        write_image(up / f"{i}.webp", "WEBP", seed=i)
    (up / "captions.csv").write_text("image,caption\n" + "".join(f"{i}.webp,pic {i}\n" for i in range(3)))
    archive = zip_folder(up, tmp_path / "up.zip", top="my photos")
    pairs, report = load_folder(archive, cache_dir=tmp_path / "cache")
    assert [p.caption for p in pairs] == ["pic 0", "pic 1", "pic 2"]
    assert [p.id for p in pairs] == ["0.webp", "1.webp", "2.webp"]  # as if the folder was given
    assert zipfile.is_zipfile(archive) and report.n_skipped == 0


def test_browser_uploads_are_stored_once_and_load(tmp_path):
    make_txt_folder(tmp_path / "up")
    archive = zip_folder(tmp_path / "up", tmp_path / "up.zip")
    stored = save_upload([("photos.zip", archive.read_bytes())], cache_dir=tmp_path / "cache")
    assert stored.name == "photos.zip" and stored.read_bytes() == archive.read_bytes()
    assert save_upload([("photos.zip", archive.read_bytes())], cache_dir=tmp_path / "cache") == stored
    pairs, _ = load_folder(stored, cache_dir=tmp_path / "cache")
    assert len(pairs) == 6
    # Several files: a folder; hostile names keep only their last part.
    files = [("a.jpg", image_bytes("JPEG")), ("a.txt", b"A photo."), ("../../b.png", image_bytes("PNG")),
             ("b.txt", b"Another photo.")]
    folder = save_upload(files, cache_dir=tmp_path / "cache")
    assert folder.is_relative_to(tmp_path / "cache" / "uploads")
    pairs, report = load_folder(folder)
    assert [(p.id, p.caption) for p in pairs] == [("a.jpg", "A photo."), ("b.png", "Another photo.")]
    with pytest.raises(DataError, match="nothing was uploaded"):
        save_upload([], cache_dir=tmp_path / "cache")
    # Several archives (or one among images) at once: said plainly, nothing stored.
    with pytest.raises(DataError, match=r"2 files uploaded together, 2 of them archives "
                                        r"\(photos.zip, more.zip\): upload one archive at a time"):
        save_upload([("photos.zip", archive.read_bytes()), ("more.zip", archive.read_bytes())],
                    cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="1 of them archives"):
        save_upload([("a.jpg", image_bytes("JPEG")), ("photos.zip", archive.read_bytes())],
                    cache_dir=tmp_path / "cache")


def test_a_quote_left_open_skips_its_row_and_reads_the_lines_it_swallowed(tmp_path):
    """Every line of a captions CSV is accounted for: an unclosed quote costs only its own row,
    a comma in an unquoted last-column caption stays in the caption, extra fields elsewhere
    are skipped with the reason."""
    from gapviz.data.folder import EXTRA_FIELDS, UNCLOSED_QUOTE

    up = tmp_path / "up"
    for i in range(5):
        write_image(up / f"{i}.png", "PNG", seed=i)
    (up / "captions.csv").write_text(
        "image,caption\n"
        "0.png,a red bus\n"
        '1.png,"a quote that is never closed\n'
        "2.png,a dog on a sofa\n"
        "3.png,a cat, a hat and a mat\n"
        '4.png,"a bird, quoted"\n')
    pairs, report = load_folder(up)
    assert [(p.id, p.caption) for p in pairs] == [
        ("0.png", "a red bus"), ("2.png", "a dog on a sofa"), ("3.png", "a cat, a hat and a mat"),
        ("4.png", "a bird, quoted")]
    assert report.examples[UNCLOSED_QUOTE] == ["captions.csv line 3"]
    assert any("1 row(s) had more fields than the header" in n for n in report.notes)
    # the caption not last: extra fields cannot be placed, so that row is skipped
    (up / "captions.csv").write_text("caption,image\na cat, a hat,3.png\na dog,2.png\n")
    pairs, report = load_folder(up)
    assert [(p.id, p.caption) for p in pairs] == [("2.png", "a dog")]
    assert report.examples[EXTRA_FIELDS] == ["captions.csv line 2"]
