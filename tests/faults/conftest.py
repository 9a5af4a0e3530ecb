"""Fixtures of the fault suite, and the recorder that turns its outcomes into docs/reliability.md.

Every fault test asks for the ``fault`` fixture, describes the fault it injects and what should
happen, and notes what it observed. The test's own outcome decides ``handled``: a test that passes
handled the fault; one that fails, or is a strict ``xfail`` (a known, reported gap), did not. At
the end of the session the records go to the file ``KDCICAM_FAULTS_RESULTS`` names (when it is set: a plain
test run writes nothing into the repository), from which ``tests/faults/report.py`` writes docs/reliability.md.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from kdcicam.data.metadata import atomic_write_text

RESULTS_ENV = "KDCICAM_FAULTS_RESULTS"

CATEGORIES = ("bad images", "bad metadata and CAM files", "hostile files", "crashes", "fuzzing", "wrong use")

#: a tiny, fast training recipe: 32 px, frozen backbone (only the head trains), one epoch, one CPU
#: thread (on a shared 2-core machine two torch threads made these runs 20x slower, not faster)
FAST = [
    "model.backbone=efficientnet_lite0", "model.pretrained=true", "model.freeze_stages=12",
    "data.image_size=32", "data.batch_size=16", "data.eval_batch_size=32", "data.augment.resize=36",
    "optim.epochs=1", "optim.lr=0.003", "trainer.progress_bar=false", "trainer.seed=0",
    "trainer.log_every_n_steps=1", "data.test_splits=[test]", "trainer.num_threads=1",
]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread (see FAST), and give the rest of the test session its setting back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def results_path() -> Path | None:
    """Where the session's fault records go: ``$KDCICAM_FAULTS_RESULTS``, or nowhere."""
    return Path(os.environ[RESULTS_ENV]) if os.environ.get(RESULTS_ENV) else None


# ------------------------------------------------------------------------------------------ recorder
@dataclass
class FaultRecord:
    """One injected fault. ``handled`` is None until the test ends (then the outcome decides it,
    unless the test set it); ``data_lost``: a run, checkpoint or result the user had was destroyed."""

    name: str
    category: str
    expected: str
    observed: str = ""
    handled: bool | None = None
    data_lost: bool = False
    test: str = ""
    outcome: str = ""


@dataclass
class FaultLog:
    records: list[FaultRecord] = field(default_factory=list)
    seconds: float = 0.0

    def write(self, path: Path, args: list[str]) -> None:
        if not self.records:
            return
        doc = {"generated": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(self.seconds, 1),
               "pytest_args": args, "records": [asdict(r) for r in self.records]}
        atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


_LOG = FaultLog()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"_fault_report_{report.when}", report)
    _LOG.seconds += report.duration


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = results_path()
    if path is not None:
        _LOG.write(path, [str(a) for a in session.config.invocation_params.args])


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E ")]
    return (errors[0][1:].strip() if errors else lines[-1] if lines else "")[:300]


@pytest.fixture()
def fault(request: pytest.FixtureRequest) -> Iterator[Callable[..., FaultRecord]]:
    """``rec = fault(name, category, expected)``; set ``rec.observed`` (and ``rec.data_lost``). A test
    that checks several faults in sequence may set ``rec.handled = True`` once one is verified."""
    records: list[FaultRecord] = []

    def new(name: str, category: str, expected: str) -> FaultRecord:
        if category not in CATEGORIES:
            raise ValueError(f"unknown fault category {category!r}")
        rec = FaultRecord(name=name, category=category, expected=expected, test=request.node.nodeid)
        records.append(rec)
        return rec

    yield new
    setup = getattr(request.node, "_fault_report_setup", None)
    call = getattr(request.node, "_fault_report_call", None)
    for rec in records:
        if setup is not None and setup.skipped:
            rec.outcome, rec.handled = "skipped", None
            rec.observed = rec.observed or _first_line(setup.longreprtext)
        elif call is None or (setup is not None and setup.failed):
            rec.outcome, rec.handled = "error", False
            rec.observed = rec.observed or "the test could not run (setup error)"
        elif call.passed:
            rec.outcome = "passed"
            rec.handled = True if rec.handled is None else rec.handled
        elif hasattr(call, "wasxfail"):
            rec.outcome, rec.handled = "xfail", False
            rec.observed = rec.observed or call.wasxfail
        elif call.skipped:
            rec.outcome, rec.handled = "skipped", None
            rec.observed = rec.observed or _first_line(call.longreprtext)
        elif rec.handled is True:  # verified before a later step of the same test failed
            rec.outcome = "passed"
        else:
            rec.outcome, rec.handled = "failed", False
            rec.observed = (rec.observed + " | " if rec.observed else "") + "test failed: " + \
                _first_line(call.longreprtext)
        _LOG.records.append(rec)


# ------------------------------------------------------------------------------------------ CLI
@dataclass
class CliResult:
    rc: int
    out: str
    err: str

    def error_lines(self, command: str) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.startswith(f"kdcicam {command}: error:")]

    def one_line_error(self, command: str) -> str:
        """The CLI contract for input errors: exit 2, exactly one error line, no traceback."""
        lines = self.error_lines(command)
        assert self.rc == 2, f"exit code {self.rc}, stderr: {self.err[-2000:]}"
        assert len(lines) == 1, self.err[-2000:]
        assert "Traceback" not in self.err, self.err[-2000:]
        assert self.err.rstrip().splitlines()[-1] == lines[0], "the error message spans several lines"
        return lines[0]


def run_cli(*argv: object) -> CliResult:
    """``kdcicam ARGV`` in this process, exactly what the console script runs, with its stdout and
    stderr captured (Lightning's own log lines go to its handler, not here)."""
    from kdcicam.cli import main

    out, err = io.StringIO(), io.StringIO()
    with one_thread(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse usage errors
            rc = e.code if isinstance(e.code, int) else 2
    return CliResult(int(rc), out.getvalue(), err.getvalue())


@pytest.fixture()
def cli() -> Callable[..., CliResult]:
    return run_cli


# ------------------------------------------------------------------------------------------ data
@pytest.fixture(scope="session")
def fault_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset (64 px, 4 classes; 32 train / 16 val / 16 test images). Read-only:
    tests that break it work on a copy (:func:`copy_dataset`)."""
    from kdcicam.data.synthetic import SyntheticConfig, generate_synthetic

    root = tmp_path_factory.mktemp("faults_synth")
    generate_synthetic(root, SyntheticConfig(seed=3, size=64, num_classes=4, n_train=32, n_val=16, n_test=16,
                                             n_test_conflict=4, workers=1))
    return root


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture()
def dataset(fault_data: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the tiny dataset."""
    return copy_dataset(fault_data, tmp_path / "data")


@pytest.fixture(scope="session")
def fault_run(tmp_path_factory: pytest.TempPathFactory, fault_data: Path) -> Path:
    """A CAM run trained for one epoch on the tiny set (a few seconds). Never modified: copy it."""
    from kdcicam.config import load_config
    from kdcicam.training.pipeline import train

    run = tmp_path_factory.mktemp("faults_run") / "cam"
    with one_thread():
        train(load_config(None, [f"data.root={fault_data}", *FAST], method="cam"), run)
    return run


@pytest.fixture()
def empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "empty.yaml"
    path.write_text("{}\n")
    return path


def train_args(config: Path, data_root: Path, out: Path, *extra: str, method: str = "cam") -> list[str]:
    return ["train", str(config), "--method", method, "--out", str(out), f"data.root={data_root}", *FAST, *extra]


def link_run(run: Path, dst: Path) -> Path:
    """A private copy of a run folder whose checkpoints are hard links (no 30 MB copies): checkpoints
    are only ever replaced by rename, so the original is never modified through the link. Other
    files (logs that may be appended to) are copied."""
    dst.mkdir(parents=True)
    for item in run.rglob("*"):
        target = dst / item.relative_to(run)
        if item.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if item.suffix != ".ckpt":
                raise OSError
            os.link(item, target)
        except OSError:
            shutil.copy2(item, target)
    return dst


@pytest.fixture()
def run_copy(fault_run: Path, tmp_path: Path) -> Path:
    return link_run(fault_run, tmp_path / "run")
