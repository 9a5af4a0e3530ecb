"""`kdcicam app RUN`: serve a local page to upload photos and look at the heatmaps and boxes.

The page binds 127.0.0.1 unless ``--host`` says otherwise; it runs until Ctrl-C (or SIGTERM), then exits 0.
A path that is not a checkpoint (or a run folder without one) is refused before anything is served (exit 2).
"""
from __future__ import annotations

import argparse
import signal
import sys
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="RUN", help="a run folder (KD runs: the student is used) or a .ckpt file")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the page "
                        "to the network, without authentication)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="the slider's starting box threshold in [0, 1) (default: the one chosen on the validation "
                        "split, from the checkpoint)")
    p.add_argument("--topk", type=int, default=5, help="classes offered per photo (default 5)")
    p.add_argument("--all-contours", action="store_true",
                   help="one box per contour of the thresholded map (default: the largest contour only)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--max-upload-mb", type=float, default=32.0, metavar="MB",
                   help="largest upload accepted, in MB of 2^20 bytes (default 32)")
    p.add_argument("--max-megapixels", type=float, default=50.0, metavar="MP",
                   help="largest image accepted, in millions of pixels (default 50)")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from ..app import UploadLimits, make_server
    from ..app.server import is_loopback
    from ..errors import KdcicamError
    from ..inference import Localizer

    if not 0 <= args.port <= 65535:
        raise KdcicamError(f"--port must be in 0..65535, got {args.port}")
    if args.topk < 1:
        raise KdcicamError(f"--topk must be >= 1, got {args.topk}")
    if not args.max_upload_mb > 0:
        raise KdcicamError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    if not args.max_megapixels > 0:
        raise KdcicamError(f"--max-megapixels must be > 0, got {args.max_megapixels}")
    limits = UploadLimits(max_bytes=max(1, int(args.max_upload_mb * 1024 * 1024)),
                          max_pixels=max(1, int(args.max_megapixels * 1e6)))
    localizer = Localizer.from_checkpoint(args.checkpoint, device=args.device, threshold=args.threshold,
                                          topk=args.topk, multi_contour=args.all_contours, batch_size=1)
    server = make_server(localizer, host=args.host, port=args.port, limits=limits)
    if not is_loopback(args.host):
        print(f"kdcicam app: warning: listening on {args.host}: anyone who can reach this machine can use the page",
              file=sys.stderr)
    print(f"kdcicam app: {localizer.method} from {localizer.checkpoint}, box threshold {localizer.threshold:g} "
          f"({localizer.threshold_source})", flush=True)
    print(f"kdcicam app: serving {server.url} (Ctrl-C to stop)", flush=True)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # `kill PID` stops it as Ctrl-C does
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("kdcicam app: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


__all__ = ["add_arguments", "run"]
