"""Small data made on the fly for the data tests."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image


@dataclass
class TinyCub:
    """A CUB-layout tree: 3 classes with original ids 3, 7, 11 (7 train + 3 test images each), and
    a fourth class in classes.txt without images."""

    root: Path
    #: image id -> (relative path, class id, is_train, (x, y, w, h), (width, height))
    images: dict[int, tuple[str, int, bool, tuple[float, float, float, float], tuple[int, int]]] = field(
        default_factory=dict)

    def rewrite(self, name: str, text: str) -> None:
        (self.root / name).write_text(text)


def make_tiny_cub(root: Path) -> TinyCub:
    tree = TinyCub(root=root)
    classes = {3: "003.Sooty_Albatross", 7: "007.Parakeet_Auklet", 11: "011.Rusty_Blackbird"}
    image_id = 0
    for class_id, name in classes.items():
        (root / "images" / name).mkdir(parents=True)
        for k in range(10):
            image_id += 1
            w, h = (48, 36) if k % 2 else (30, 40)
            rel = f"{name}/{name.split('.')[1]}_{k:04d}_{image_id}.jpg"
            Image.new("RGB", (w, h), (40 * class_id % 256, 100, 30 * k)).save(root / "images" / rel, quality=90)
            box = (2.5, 3.4, 20.0, 15.55)  # rounds to (3, 3, 23, 19)
            tree.images[image_id] = (rel, class_id, k < 7, box, (w, h))
    # image 2 is 48x36; its box (10, 20, 50, 50) reaches past the border and must be clipped
    rel, c, tr, _, size = tree.images[2]
    tree.images[2] = (rel, c, tr, (10.0, 20.0, 40.0, 30.0), size)
    lines = {
        "images.txt": [f"{i} {v[0]}" for i, v in tree.images.items()],
        "image_class_labels.txt": [f"{i} {v[1]}" for i, v in tree.images.items()],
        "train_test_split.txt": [f"{i} {int(v[2])}" for i, v in tree.images.items()],
        "bounding_boxes.txt": [f"{i} {v[3][0]} {v[3][1]} {v[3][2]} {v[3][3]}" for i, v in tree.images.items()],
        "classes.txt": [f"{c} {n}" for c, n in classes.items()] + ["12 012.Yellow_headed_Blackbird"],
    }
    for name, rows in lines.items():
        (root / name).write_text("\n".join(rows) + "\n")
    return tree


@pytest.fixture
def tiny_cub(tmp_path: Path) -> TinyCub:
    return make_tiny_cub(tmp_path / "CUB_tiny")

