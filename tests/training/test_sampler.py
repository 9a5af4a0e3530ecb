"""The resumable training loader: a mid-epoch resume skips the batches already seen, in that epoch only."""
from __future__ import annotations

from kdcicam.training.datamodule import EpochSampler, ResumableLoader


def _loader(n: int = 10, batch: int = 2) -> ResumableLoader:
    return ResumableLoader(list(range(n)), batch_size=batch, sampler=EpochSampler(n, shuffle=True, seed=3, pad=True),
                           drop_last=True)


def _epoch(loader: ResumableLoader, epoch: int) -> list[int]:
    loader.sampler.set_epoch(epoch)
    return [int(i) for batch in loader for i in batch]


def test_resume_mid_epoch_skips_seen_batches_once():
    full = _epoch(_loader(), 1)
    seen = _loader()
    it = (seen.sampler.set_epoch(1), iter(seen))[1]
    next(it), next(it)
    state = seen.state_dict()
    assert state == {"epoch": 1, "consumed_batches": 2}
    resumed = _loader()
    resumed.load_state_dict(state)
    assert _epoch(resumed, 1) == full[4:]
    assert resumed.state_dict()["consumed_batches"] == 5  # the whole epoch, skipped batches included
    assert _epoch(resumed, 1) == full  # the skip applies once


def test_a_skip_meant_for_another_epoch_is_dropped():
    resumed = _loader()
    resumed.load_state_dict({"epoch": 1, "consumed_batches": 5})  # written at epoch 1's end
    assert _epoch(resumed, 2) == _epoch(_loader(), 2)  # epoch 2 starts from its first batch
