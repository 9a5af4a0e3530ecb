"""`kdcicam data import` library: ImageFolder / CSV labels, CSV / VOC / COCO boxes, the val hold-out,
errors naming file and line, nothing written on error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from kdcicam.data.importers import (
    SplitSpec,
    import_dataset,
    read_boxes,
    read_labels,
    stratified_holdout,
)
from kdcicam.data.metadata import MetadataError, read_dataset_info, read_metadata

CLASSES = ("cat", "dog", "owl")


def make_folder(root: Path, per_class: int = 6, size: tuple[int, int] = (40, 30)) -> Path:
    """root/<class>/<class>_<k>.png, each a distinct colour."""
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            Image.new("RGB", size, (80 * c, 20 * k, 100)).save(root / name / f"{name}_{k}.png")
    return root


def test_image_folder_and_csv_labels(tmp_path: Path):
    folder = make_folder(tmp_path / "photos", per_class=2)
    (folder / ".thumbs").mkdir()
    Image.new("RGB", (4, 4)).save(folder / ".thumbs" / "x.png")  # hidden: ignored
    (folder / "cat" / "notes.txt").write_text("not an image")
    images = read_labels(folder)
    assert [(im.path.relative_to(folder).as_posix(), im.label) for im in images] == [
        ("cat/cat_0.png", "cat"), ("cat/cat_1.png", "cat"), ("dog/dog_0.png", "dog"), ("dog/dog_1.png", "dog"),
        ("owl/owl_0.png", "owl"), ("owl/owl_1.png", "owl")]
    csv_file = folder / "labels.csv"
    csv_file.write_text("path,label\ncat/cat_0.png,feline\n\n\"dog/dog_0.png\",canine\n")
    rows = read_labels(csv_file)
    assert [(im.path.name, im.label, im.line) for im in rows] == [("cat_0.png", "feline", 2), ("dog_0.png", "canine", 4)]


@pytest.mark.parametrize("text, line, needle", [
    ("cat/cat_0.png\n", 1, "expected 2 fields"),
    ("cat/cat_0.png,cat\ncat/cat_0.png,dog\n", 2, "listed twice (first on line 1)"),
    ("cat/nope.png,cat\n", 1, "not found"),
    ("cat/cat_0.png,\n", 1, "empty label"),
])
def test_label_csv_errors_name_the_line(tmp_path: Path, text: str, line: int, needle: str):
    folder = make_folder(tmp_path / "p", per_class=1)
    (folder / "l.csv").write_text(text)
    with pytest.raises(MetadataError) as e:
        read_labels(folder / "l.csv")
    assert e.value.line == line and needle in str(e.value) and "l.csv" in str(e.value)


def test_box_formats_agree(tmp_path: Path):
    """The same box in CSV, VOC (1-based inclusive) and COCO (x, y, w, h) reads the same."""
    (tmp_path / "b.csv").write_text("image,x0,y0,x1,y1,label\ncat/cat_0.png,4,5,20,25,cat\n")
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "cat_0.xml").write_text(
        "<annotation><folder>cat</folder><filename>cat_0.png</filename><size><width>40</width><height>30</height>"
        "</size><object><name>cat</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>20</xmax><ymax>25</ymax>"
        "</bndbox></object></annotation>")
    coco = {"images": [{"id": 7, "file_name": "cat/cat_0.png", "width": 40, "height": 30}],
            "annotations": [{"id": 1, "image_id": 7, "bbox": [4, 5, 16, 20], "category_id": 3}],
            "categories": [{"id": 3, "name": "cat"}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    for path in (tmp_path / "b.csv", voc, tmp_path / "c.json"):
        (record,) = read_boxes(path)
        assert record.box == (4, 5, 20, 25) and record.label == "cat", path


def test_voc_refuses_doctype_and_entities(tmp_path: Path):
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>\n'
                    "<annotation><filename>&lol2;</filename></annotation>\n")
    with pytest.raises(MetadataError, match="DOCTYPE") as e:
        read_boxes(bomb)
    assert e.value.line == 2
    (tmp_path / "bad.xml").write_text("<annotation>\n<filename>a.png</filename>\n<object><bndbox><xmin>x</xmin>"
                                      "</bndbox></object></annotation>")
    with pytest.raises(MetadataError, match="object 1: xmin 'x' is not a number") as e:
        read_boxes(tmp_path / "bad.xml")
    assert e.value.line == 3
    (tmp_path / "broken.xml").write_text("<annotation>\n<filename>a.png</filename>\n")
    with pytest.raises(MetadataError, match="invalid XML"):
        read_boxes(tmp_path / "broken.xml")


@pytest.mark.parametrize("coco, needle", [
    ({"images": []}, "'images' and 'annotations'"),
    ({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 2, "bbox": [0, 0, 1, 1]}]},
     "annotations[0]: image_id 2 is not in 'images'"),
    ({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 9, "image_id": 1, "bbox": [0, 0, -1, 1]}]},
     "annotations[0] (id 9): negative width"),
    ({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "bbox": [0, 0, 1]}]},
     "bbox must be [x, y, width, height]"),
])
def test_coco_errors_name_the_entry(tmp_path: Path, coco: dict, needle: str):
    (tmp_path / "c.json").write_text(json.dumps(coco))
    with pytest.raises(MetadataError) as e:
        read_boxes(tmp_path / "c.json")
    assert needle in str(e.value) and "c.json" in str(e.value)


def test_holdout_is_stratified_and_deterministic():
    labels = [0] * 10 + [1] * 5 + [2] * 1
    held = stratified_holdout(labels, 0.2, seed=3)
    assert held == stratified_holdout(labels, 0.2, seed=3)
    assert sum(labels[i] == 0 for i in held) == 2 and sum(labels[i] == 1 for i in held) == 1
    assert not any(labels[i] == 2 for i in held)  # a class keeps at least one training image


def test_import_folder_with_val_boxes_for_a_few_images(tmp_path: Path):
    folder = make_folder(tmp_path / "photos")
    (tmp_path / "val_boxes.csv").write_text("path,x0,y0,x1,y1\n"
                                            "cat/cat_0.png,2.5,3,30,20\n"
                                            "cat_0.png,0,0,5,5\n"  # the same image, by its file name
                                            "dog/dog_1.png,10,10,50,29\n"  # clipped at x 40
                                            "owl/owl_2.png,1,1,39,29\n")
    summary = import_dataset(tmp_path / "data", SplitSpec(labels=folder),
                             val=SplitSpec(boxes=tmp_path / "val_boxes.csv"), name="mine")
    assert summary.val_origin == "boxes" and summary.counts == {"train": 15, "val": 3}
    assert summary.boxes == {"train": 0, "val": 4} and summary.clipped_boxes == 1
    info = read_dataset_info(tmp_path / "data")
    assert info.class_names == list(CLASSES) and info.image_root == folder.resolve() and info.name == "mine"
    val = read_metadata(tmp_path / "data" / "val")
    assert val.image_ids == ["cat/cat_0.png", "dog/dog_1.png", "owl/owl_2.png"]
    assert val.boxes["cat/cat_0.png"] == [(3, 3, 30, 20), (0, 0, 5, 5)]
    assert val.boxes["dog/dog_1.png"] == [(10, 10, 40, 29)]
    assert val.image_sizes["owl/owl_2.png"] == (40, 30)
    assert [val.class_labels[i] for i in val.image_ids] == [0, 1, 2]
    train = read_metadata(tmp_path / "data" / "train")
    assert "cat/cat_0.png" not in train.class_labels and len(train) == 15 and not train.has_boxes


def test_import_holds_out_val_and_reads_test_from_coco(tmp_path: Path):
    folder = make_folder(tmp_path / "photos" / "train", per_class=10)
    test = tmp_path / "photos" / "test"
    test.mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES)]}
    for k in range(len(CLASSES)):  # a flat test folder: classes come from the COCO categories
        Image.new("RGB", (30, 40), (k, 0, 0)).save(test / f"t{k}.jpg")
        coco["images"].append({"id": k, "file_name": f"t{k}.jpg", "width": 30, "height": 40})
        coco["annotations"].append({"image_id": k, "bbox": [1, 2, 10, 20], "category_id": k})
    (tmp_path / "test.json").write_text(json.dumps(coco))
    a = import_dataset(tmp_path / "a", SplitSpec(labels=folder), test=SplitSpec(labels=test, boxes=tmp_path / "test.json"),
                       val_fraction=0.2, seed=5)
    import_dataset(tmp_path / "b", SplitSpec(labels=folder), test=SplitSpec(labels=test, boxes=tmp_path / "test.json"),
                       val_fraction=0.2, seed=5)
    assert a.counts == {"train": 24, "val": 6, "test": 3} and a.val_origin == "held out"
    assert a.image_root == (tmp_path / "photos").resolve()
    for split in ("train", "val", "test"):
        assert (tmp_path / "a" / split / "image_ids.txt").read_text() == (tmp_path / "b" / split / "image_ids.txt").read_text()
    t = read_metadata(tmp_path / "a" / "test")
    assert t.boxes == {"test/t0.jpg": [(1, 2, 11, 22)], "test/t1.jpg": [(1, 2, 11, 22)], "test/t2.jpg": [(1, 2, 11, 22)]}
    assert [t.class_labels[i] for i in t.image_ids] == [0, 1, 2]
    val = read_metadata(tmp_path / "a" / "val")
    assert sorted(val.class_labels.values()) == [0, 0, 1, 1, 2, 2] and not val.has_boxes
    assert any("val has no boxes" in n for n in a.notes)
    assert read_dataset_info(tmp_path / "a").extra["val_fraction"] == 0.2


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("boxes, needle", [
    ("cat/cat_0.png,1,1,5,5\nowl/nope.png,1,1,2,2\n", "line 2"),
    ("cat/cat_0.png,9,1,5,5\n", "inverted box"),
    ("cat/cat_0.png,50,1,60,5\n", "empty after rounding and clipping"),
    ("cat/cat_0.png,1,1,5,5,dog\n", "differs from the image's class 'cat'"),
    ("cat/cat_0.png,1,1,5\n", "expected 5 or 6 fields"),
    ("cat/cat_0.png,1,1,5,x\n", "y1 'x' is not a number"),
])
def test_import_errors_write_nothing(tmp_path: Path, boxes: str, needle: str):
    folder = make_folder(tmp_path / "photos", per_class=2)
    (tmp_path / "b.csv").write_text(boxes)
    out = tmp_path / "data"
    import_dataset(out, SplitSpec(labels=folder), val_fraction=0.5)  # a previous import stays as it was
    before = _snapshot(out)
    with pytest.raises(MetadataError) as e:
        import_dataset(out, SplitSpec(labels=folder), val=SplitSpec(boxes=tmp_path / "b.csv"), overwrite=True)
    msg = str(e.value).replace(f"{tmp_path / 'b.csv'}:2", "line 2")
    assert needle in msg and "b.csv" in str(e.value)
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left


def test_import_refuses_unsafe_outputs(tmp_path: Path):
    folder = make_folder(tmp_path / "photos", per_class=2)
    with pytest.raises(MetadataError, match="holds the images"):
        import_dataset(tmp_path, SplitSpec(labels=folder))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("x")
    with pytest.raises(MetadataError, match="not empty"):
        import_dataset(tmp_path / "busy", SplitSpec(labels=folder))
    import_dataset(tmp_path / "d", SplitSpec(labels=folder), val_fraction=0.5)
    with pytest.raises(MetadataError, match="--overwrite"):
        import_dataset(tmp_path / "d", SplitSpec(labels=folder), val_fraction=0.5)
    summary = import_dataset(tmp_path / "d", SplitSpec(labels=folder), val_fraction=0.0, overwrite=True)
    assert summary.counts == {"train": 6} and not (tmp_path / "d" / "val").exists()


def test_val_and_test_classes_must_occur_in_train(tmp_path: Path):
    folder = make_folder(tmp_path / "photos", per_class=2)
    (tmp_path / "v.csv").write_text(f"path,label\n{folder}/cat/cat_0.png,cat\n{folder}/owl/owl_0.png,lion\n")
    with pytest.raises(MetadataError, match=r"'lion'.*does not occur in train") as e:
        import_dataset(tmp_path / "d", SplitSpec(labels=folder), val=SplitSpec(labels=tmp_path / "v.csv"))
    assert e.value.line == 3 and e.value.file.endswith("v.csv")
    (tmp_path / "v.csv").write_text(f"path,label\n{folder}/cat/cat_0.png,cat\n")
    summary = import_dataset(tmp_path / "d", SplitSpec(labels=folder), val=SplitSpec(labels=tmp_path / "v.csv"))
    assert summary.counts == {"train": 5, "val": 1} and "left out of train" in summary.notes[0]


def test_exif_rotated_image_box_drawn_on_stored_pixels(tmp_path: Path):
    folder = make_folder(tmp_path / "photos", per_class=2)
    im = Image.new("RGB", (40, 20), (1, 2, 3))
    exif = im.getexif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: 20 x 40
    im.save(folder / "cat" / "rot.jpg", exif=exif)
    voc = tmp_path / "rot.xml"
    voc.write_text("<annotation><filename>rot.jpg</filename><size><width>40</width><height>20</height></size>"
                   "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>5</ymax>"
                   "</bndbox></object></annotation>")
    summary = import_dataset(tmp_path / "d", SplitSpec(labels=folder), val=SplitSpec(boxes=voc))
    assert summary.exif_rotated_boxes == 1
    val = read_metadata(tmp_path / "d" / "val")
    assert val.image_sizes["cat/rot.jpg"] == (20, 40)
    assert val.boxes["cat/rot.jpg"] == [(15, 0, 20, 10)]  # stored (0,0,10,5) rotated with the pixels


def test_a_file_name_the_metadata_cannot_hold(tmp_path: Path):
    folder = make_folder(tmp_path / "photos", per_class=2)
    Image.new("RGB", (8, 8)).save(folder / "cat" / "a,b.png")
    with pytest.raises(MetadataError, match="has a comma"):
        import_dataset(tmp_path / "d", SplitSpec(labels=folder), val_fraction=0.5)
    assert not (tmp_path / "d").exists()


def test_symlinked_images_stay_in_their_folder(tmp_path: Path):
    folder = make_folder(tmp_path / "photos", per_class=2)
    elsewhere = make_folder(tmp_path / "elsewhere", per_class=1)
    (folder / "owl" / "linked.png").symlink_to(elsewhere / "owl" / "owl_0.png")
    (tmp_path / "labels.csv").write_text("owl/linked.png,owl\ncat/cat_0.png,cat\ndog/dog_0.png,dog\n")
    summary = import_dataset(tmp_path / "d", SplitSpec(labels=tmp_path / "labels.csv"), image_root=folder,
                             val_fraction=0.0)
    assert summary.image_root == folder.resolve()
    assert "owl/linked.png" in read_metadata(tmp_path / "d" / "train").image_ids
