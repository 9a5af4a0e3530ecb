"""Data for training: deterministic, resumable, DDP-sharded.

Three choices make a killed-and-resumed run end with the same weights as an uninterrupted one:
- every epoch's order is a permutation seeded by (seed, epoch), sharded by rank, not drawn from
  a global RNG whose state a checkpoint would have to carry;
- every sample's augmentation (and its KD route) is seeded by (seed, epoch, index), so it does not
  depend on what ran before it, on which worker loads it, or on how many batches were skipped;
- the train loader is *stateful* (``state_dict``/``load_state_dict``): Lightning stores how many
  batches of the epoch were consumed in the checkpoint and the loader skips exactly those on resume.

With ``data.num_workers`` > 0 the workers persist across epochs; the epoch that seeds augmentation
lives in shared memory, so they see each new epoch as an in-process loader does. ``data.cache_images``
decodes every image once, before the workers start (:mod:`kdcicam.data.cache`).
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from ..config import AugmentSettings, RunConfig
from ..data.cache import DecodedImageCache
from ..data.dataset import (
    AugmentConfig,
    WSOLDataset,
    build_eval_transform,
    build_train_transform,
    collate_wsol,
    transform_sample,
)
from ..data.metadata import Metadata, read_dataset_info, read_metadata
from ..errors import ConfigError

log = logging.getLogger(__name__)


def sample_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (platform- and process-independent)."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochSampler(Sampler[int]):
    """Shuffled (seed, epoch) permutation, or the identity order, sharded by rank without padding
    for evaluation (every image scored exactly once) and with padding for training (equal steps)."""

    def __init__(self, size: int, shuffle: bool, seed: int, pad: bool):
        self.size, self.shuffle, self.seed, self.pad = size, shuffle, seed, pad
        self.epoch = 0
        self.skip = 0  # samples of this rank's shard to skip once (resume mid-epoch) ...
        self.skip_epoch = 0  # ... in this epoch only: a skip meant for another epoch is dropped
        self.listeners: list[Callable[[int], None]] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if epoch != self.skip_epoch:
            self.skip = 0
        for listener in self.listeners:
            listener(epoch)

    def _shard(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, 17))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        rank, world = _rank_world()
        if world > 1:
            if self.pad:
                total = -(-self.size // world) * world
                order = (order * 2)[:total]
            order = order[rank::world]
        return order

    def __iter__(self) -> Iterator[int]:
        order = self._shard()
        skip, self.skip = self.skip, 0
        return iter(order[skip:])

    def __len__(self) -> int:
        # the whole epoch's length, also while resuming: Lightning counts the skipped batches as done
        return len(self._shard())


class ResumableLoader(DataLoader):
    """A DataLoader that Lightning recognises as stateful: it remembers how many batches of the
    current epoch were handed out and, after ``load_state_dict``, skips them on the next pass."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._consumed = 0
        self._epoch = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # a generator, not DataLoader's iterator
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        self._epoch = sampler.epoch
        self._consumed = sampler.skip // self.batch_size if self.batch_size else 0
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "consumed_batches": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        epoch = int(state.get("epoch", 0))
        sampler.skip_epoch = epoch
        sampler.set_epoch(epoch)
        sampler.skip = int(state.get("consumed_batches", 0)) * int(self.batch_size or 1)


class SeededDataset(WSOLDataset):
    """WSOLDataset whose per-sample augmentation is seeded by (seed, epoch, index); with ``routes``
    each sample also draws a KD route (uniform over ``routes``) and gets that route's transform."""

    def __init__(self, metadata: Metadata, transforms: Sequence[Callable], seed: int,
                 routes: Sequence[int] | None = None, **kwargs: Any):
        super().__init__(metadata, transform=transforms[0], **kwargs)
        self.transforms = list(transforms)
        self.seed = seed
        self.routes = list(routes) if routes is not None else None
        # in shared memory: persistent DataLoader workers hold copies of this dataset and must see
        # the epoch the sampler announces in the main process
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def route_of(self, index: int) -> int:
        if not self.routes:
            return 0
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index, 29))
        return self.routes[int(torch.randint(len(self.routes), (1,), generator=g))]

    def apply_transform(self, index: int, sample: dict) -> dict:
        route = self.route_of(index)
        transform = self.transforms[route] if self.routes else self.transforms[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            out = transform_sample(sample, transform)
        out["route"] = route
        return out


def augment_config(settings: AugmentSettings, crop: int) -> AugmentConfig:
    resize = settings.resize or round(crop * 8 / 7)
    return AugmentConfig(kind=settings.kind, crop=crop, resize=resize, scale=(settings.scale_min, settings.scale_max),
                         color_jitter=settings.color_jitter, lighting=settings.lighting,
                         randaugment=settings.randaugment)


class WSOLDataModule(L.LightningDataModule):
    """Train/val/test loaders for one stage. ``routes`` switches on the KD student's per-sample routes."""

    def __init__(self, config: RunConfig, routes: Sequence[int] | None = None):
        super().__init__()
        self.config = config
        self.routes = list(routes) if routes is not None else None
        self.root = Path(config.data.root)
        self._metadata: dict[str, Metadata] = {}
        self._caches: dict[str, DecodedImageCache] = {}

    # ------------------------------------------------------------------ metadata
    @property
    def info(self):
        if not (self.root / "dataset.yaml").is_file():
            raise ConfigError(f"data.root={str(self.root)!r}: no dataset.yaml there; make one with "
                              "`kdcicam data synthetic --out DIR` or `kdcicam data cub SRC --out DIR`")
        return read_dataset_info(self.root)

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def metadata(self, split: str) -> Metadata:
        if split not in self._metadata:
            folder = self.root / split
            if not folder.is_dir():
                available = sorted(p.name for p in self.root.iterdir() if (p / "image_ids.txt").is_file())
                raise ConfigError(f"split {split!r} not found under {self.root} (available: {', '.join(available)})")
            self._metadata[split] = read_metadata(folder)
        return self._metadata[split]

    def image_cache(self, split: str, md: Metadata) -> DecodedImageCache | None:
        """The split's decoded images when ``data.cache_images`` is on (decoded on first use)."""
        if not self.config.data.cache_images:
            return None
        if split not in self._caches:
            self._caches[split] = DecodedImageCache.fill(md)
        return self._caches[split]

    # ------------------------------------------------------------------ datasets
    def train_dataset(self) -> SeededDataset:
        cfg = self.config
        md = self.metadata(cfg.data.train_split)
        if cfg.data.limit_train_images:
            md = subset_metadata(md, cfg.data.limit_train_images, cfg.trainer.seed)
        if self.routes is not None:
            transforms = [build_train_transform(augment_config(a, cfg.data.image_size)) for a in cfg.kd.route_augment]
        else:
            transforms = [build_train_transform(augment_config(cfg.data.augment, cfg.data.image_size))]
        return SeededDataset(md, transforms, seed=cfg.trainer.seed, routes=self.routes,
                             skip_bad_images=cfg.data.skip_bad_images,
                             cache=self.image_cache(cfg.data.train_split, md))

    def eval_dataset(self, split: str, load_masks: bool = True) -> WSOLDataset:
        md = self.metadata(split)
        return WSOLDataset(md, transform=build_eval_transform(self.config.data.image_size),
                           load_masks=load_masks and md.has_masks, skip_bad_images=self.config.data.skip_bad_images,
                           replace_bad_images=False, cache=self.image_cache(split, md))

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset: WSOLDataset, train: bool) -> DataLoader:
        cfg = self.config
        sampler = EpochSampler(len(dataset), shuffle=train, seed=cfg.trainer.seed, pad=train)
        if isinstance(dataset, SeededDataset):
            sampler.listeners.append(dataset.set_epoch)
        cls = ResumableLoader if train else DataLoader
        batch = cfg.data.batch_size if train else cfg.data.eval_batch_size
        if train and len(dataset) < batch:
            raise ConfigError(f"data.batch_size={batch} is larger than the training set ({len(dataset)} images)")
        workers = cfg.data.num_workers
        return cls(dataset, batch_size=batch, sampler=sampler, collate_fn=collate_wsol, num_workers=workers,
                   drop_last=train, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset(self.config.data.val_split), train=False)

    def eval_dataloader(self, split: str) -> DataLoader:
        return self._loader(self.eval_dataset(split), train=False)


def subset_metadata(md: Metadata, n: int, seed: int) -> Metadata:
    """A deterministic subset of ``n`` images (for smoke tests and quick demos)."""
    if n >= len(md):
        return md
    g = torch.Generator().manual_seed(sample_seed(seed, 101))
    keep = sorted(torch.randperm(len(md), generator=g)[:n].tolist())
    ids = [md.image_ids[i] for i in keep]
    return Metadata(image_ids=ids, class_labels={i: md.class_labels[i] for i in ids},
                    image_sizes={i: md.image_sizes[i] for i in ids if i in md.image_sizes},
                    boxes={i: md.boxes[i] for i in ids if i in md.boxes},
                    masks={i: md.masks[i] for i in ids if i in md.masks},
                    ignore_masks={i: md.ignore_masks[i] for i in ids if i in md.ignore_masks},
                    num_classes=md.num_classes, class_names=md.class_names, image_root=md.image_root,
                    split_dir=md.split_dir)
