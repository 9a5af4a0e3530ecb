"""``kdcicam app RUN``: a local web page to look at what a trained localizer does on your own photos.

Upload photos, see the heatmap and the boxes, move the box threshold (the boxes are redrawn without
running the model again), pick one of the top-k classes, download the boxes as JSON or COCO
detections. The server is the standard library's (see :mod:`kdcicam.app.server` for why), inference
is :class:`kdcicam.Localizer`'s, and the boxes follow the evaluator's rule at every threshold
(:mod:`kdcicam.app.analysis`).

>>> from kdcicam import Localizer                                      # doctest: +SKIP
>>> from kdcicam.app import make_server                                 # doctest: +SKIP
>>> server = make_server(Localizer.from_checkpoint("runs/cam"), port=0) # doctest: +SKIP
>>> print(server.url); server.serve_forever()                           # doctest: +SKIP
"""
from __future__ import annotations

from .server import AppServer, LocalizerApp, make_server
from .uploads import UploadError, UploadLimits

__all__ = ["AppServer", "LocalizerApp", "UploadError", "UploadLimits", "make_server"]
