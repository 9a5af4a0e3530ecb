"""The GPU-feeding data pipeline: the decoded-image cache (data.cache_images) gives the same samples as
decoding the files, and persistent workers see each new epoch (augmentation and KD routes change with
the epoch exactly as in-process loading does)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdcicam.data import cache as cache_mod
from kdcicam.data.cache import DecodedImageCache
from kdcicam.data.metadata import read_metadata
from kdcicam.errors import ConfigError
from kdcicam.training.datamodule import WSOLDataModule


def _images(loader) -> dict[str, torch.Tensor]:
    return {i: img for batch in loader for i, img in zip(batch["image_id"], batch["image"], strict=True)}


def _epoch(datamodule: WSOLDataModule, loader, epoch: int) -> tuple[dict[str, torch.Tensor], list[int]]:
    loader.sampler.set_epoch(epoch)
    images, routes = {}, []
    for batch in loader:
        images.update(zip(batch["image_id"], batch["image"], strict=True))
        routes += batch["route"].tolist()
    return images, routes


def test_cache_holds_the_decoded_files_and_training_leaves_it_untouched(fast_config, tiny_data: Path):
    md = read_metadata(tiny_data / "train")
    cache = DecodedImageCache.fill(md, threads=2)
    assert len(cache) == len(md) and cache.nbytes == sum(3 * w * h for w, h in md.image_sizes.values())
    cfg = fast_config("kd-ci-cam", "data.cache_images=true")
    dm = WSOLDataModule(cfg, routes=[0, 1, 2])
    loader = dm.train_dataloader()
    assert loader.dataset.cache is not None
    for epoch in (0, 1):
        _epoch(dm, loader, epoch)
    fresh = DecodedImageCache.fill(md, threads=1)
    used = loader.dataset.cache
    assert all(torch.equal(used.get(i), fresh.get(i)) for i in md.image_ids)  # no transform wrote into it


def test_cached_and_uncached_loading_give_the_same_samples(fast_config):
    plain = WSOLDataModule(fast_config("ci-cam"))
    cached = WSOLDataModule(fast_config("ci-cam", "data.cache_images=true"))
    for split in ("val", "test"):
        a, b = _images(plain.eval_dataloader(split)), _images(cached.eval_dataloader(split))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, _ = _epoch(plain, plain.train_dataloader(), 1)
    b, _ = _epoch(cached, cached.train_dataloader(), 1)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_persistent_workers_follow_the_epoch(fast_config):
    """Two worker processes kept across epochs draw epoch 1's augmentation and routes, not epoch 0's again."""
    inline = WSOLDataModule(fast_config("kd-ci-cam", "data.limit_train_images=32"), routes=[0, 1, 2])
    workers = WSOLDataModule(fast_config("kd-ci-cam", "data.limit_train_images=32", "data.num_workers=2",
                                         "data.cache_images=true"), routes=[0, 1, 2])
    loader = workers.train_dataloader()
    assert loader.persistent_workers
    ref_loader = inline.train_dataloader()
    for epoch in (0, 1):
        got, got_routes = _epoch(workers, loader, epoch)
        ref, ref_routes = _epoch(inline, ref_loader, epoch)
        assert got_routes == ref_routes
        assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    first, _ = _epoch(inline, ref_loader, 0)
    assert any(not torch.equal(first[k], got[k]) for k in got)  # epoch 1 really differs from epoch 0


def test_a_cache_that_cannot_fit_is_refused_by_name(tiny_data: Path, monkeypatch: pytest.MonkeyPatch):
    md = read_metadata(tiny_data / "val")
    monkeypatch.setattr(cache_mod, "available_memory_bytes", lambda: 1000)
    with pytest.raises(ConfigError, match=r"data.cache_images: the 32 images of .*val need .* set data.cache_images=false"):
        DecodedImageCache.fill(md)


def test_an_unreadable_image_is_left_to_the_dataset(fast_config, tiny_data: Path, tmp_path: Path):
    import shutil

    from kdcicam.errors import ImageReadError

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    md = read_metadata(data / "val")
    (md.image_root / md.image_ids[0]).write_bytes(b"not an image")
    cache = DecodedImageCache.fill(md, threads=2)
    assert md.image_ids[0] not in cache and len(cache) == len(md) - 1
    dm = WSOLDataModule(fast_config("cam", f"data.root={data}", "data.cache_images=true"))
    with pytest.raises(ImageReadError, match=r"not an image|cannot identify"):
        _images(dm.eval_dataloader("val"))
