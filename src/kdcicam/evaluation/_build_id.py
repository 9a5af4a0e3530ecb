"""What an ahead-of-time kernel build depends on, computed the same way when it is built (:mod:`._aot`)
and when it is loaded (:mod:`._compiled`): the kernels' source, and the CPU it was compiled for."""
from __future__ import annotations

import hashlib
from pathlib import Path

KERNELS_SOURCE = Path(__file__).with_name("_kernels.py")
CPUINFO = Path("/proc/cpuinfo")


def _hash60(data: bytes) -> int:
    """The first 60 bits of the SHA-256: a positive int64, what the compiled module can return."""
    return int(hashlib.sha256(data).hexdigest()[:15], 16)


def source_hash(source: Path = KERNELS_SOURCE) -> int:
    """The kernels' identity: the hash of ``_kernels.py``."""
    return _hash60(source.read_bytes())


def cpu_flags_hash(cpuinfo: Path = CPUINFO) -> int:
    """The hash of this CPU's instruction-set flags (the first ``flags`` line of /proc/cpuinfo,
    sorted), 0 where there is no such file. Code compiled for the host CPU may use any of them."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return _hash60(" ".join(sorted(line.partition(":")[2].split())).encode())
    except OSError:
        pass
    return 0
