"""Your own images → wsolevaluation metadata (``kdcicam data import``).

WSOL trains on image-level labels only; boxes are needed on val (to choose the box threshold) and
on test (to score localization). So the importer reads, per split:

- **labels**: a folder with one sub-folder per class (torchvision's ImageFolder layout; a class is
  its folder name; images directly in the folder have no class until a box file gives one), or a
  CSV ``path,label`` (a header line is allowed; paths relative to the CSV's folder, or absolute);
- **boxes** (val/test): a CSV ``path,x0,y0,x1,y1[,label]`` (pixels, x1/y1 exclusive corners), a
  Pascal VOC folder (one ``.xml`` per image; VOC's 1-based inclusive ``xmin..xmax`` becomes
  ``xmin-1..xmax``) or a COCO JSON file (``bbox`` = ``x, y, width, height``).

A box file names an image by its path relative to the split's source, relative to the image root,
relative to the box file, or by its bare file name when that is unique in the split.

Decisions, so that an import is reproducible:

- **Classes** are the train split's labels, sorted (numerically when every label is an integer);
  a val/test label that train never shows is an error (the model could not predict it).
- **val**, when not given as a source: the images a ``val`` box file names, taken out of train;
  else a per-class seeded hold-out of train (:func:`stratified_holdout`, the same rule as
  ``kdcicam data cub``).
- **Boxes** are rounded half-up to integers (wsolevaluation's reader calls ``int()``) and clipped to
  the image; an empty or inverted box is an error. Boxes are taken in the *displayed* orientation
  (EXIF applied, as the loader shows the image); a VOC/COCO file that states the stored size of a
  90°-rotated image had its boxes drawn on the stored pixels, and they are rotated with the image.
- **Nothing is written on error**: everything is read and checked first, the splits are written to
  a temporary folder, read back with the package's own reader, then renamed into place.

Every problem raises :class:`~kdcicam.data.metadata.MetadataError` naming the file and the line
(or, in JSON and XML, the entry).
"""

from __future__ import annotations

from ..cub import (
    stratified_holdout,  # re-exported: the hold-out rule the import shares with `kdcicam data cub`
)
from .boxes import BoxRecord, parse_xml, read_boxes, read_boxes_csv, read_coco, read_voc, read_voc_file
from .build import BOX_CONVENTION, SPLITS, ImportSummary, SplitSpec, import_dataset
from .labels import IMAGE_EXTENSIONS, LabeledImage, read_image_folder, read_label_csv, read_labels

__all__ = [
    "BOX_CONVENTION",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "BoxRecord",
    "ImportSummary",
    "LabeledImage",
    "SplitSpec",
    "import_dataset",
    "parse_xml",
    "read_boxes",
    "read_boxes_csv",
    "read_coco",
    "read_image_folder",
    "read_label_csv",
    "read_labels",
    "read_voc",
    "read_voc_file",
    "stratified_holdout",
]
