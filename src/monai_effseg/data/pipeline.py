"""The training data pipeline the bundles declare: cached deterministic preprocessing, random augmentation after the
cache (optionally on the GPU), and a data loader sized from the machine.

- :func:`cached_dataset`: the deterministic prefix of a ``Compose`` cached on disk (``PersistentDataset`` under
  ``cache_dir``, keyed by the data item and a hash of those transforms) and a ``cache_rate`` share of it in memory
  (``CacheDataset``); the random transforms run on every access, after the cache.
- :func:`augment_on_device`: ``ToDeviced`` inserted before the random spatial augmentations (after the random crop,
  so only patches travel), behind a switch.
- :func:`dataloader`: ``ThreadDataLoader`` (one background thread; CUDA tensors cannot cross processes) when
  augmenting on the GPU, else ``DataLoader`` with worker processes and pinned memory on CUDA.
- :func:`default_num_workers`: worker processes per training process from the CPUs this process may use.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from monai import transforms as mt
from monai.data import CacheDataset, DataLoader, PersistentDataset, ThreadDataLoader
from monai.transforms import Compose, RandomizableTrait, Transform

__all__ = [
    "SPATIAL_AUGMENTATIONS",
    "augment_on_device",
    "cached_dataset",
    "dataloader",
    "default_num_workers",
    "split_transform",
    "transform_hash",
]

logger = logging.getLogger(__name__)

SPATIAL_AUGMENTATIONS: tuple[type, ...] = (
    mt.RandAffined,
    mt.Rand2DElasticd,
    mt.Rand3DElasticd,
    mt.RandRotated,
    mt.RandZoomd,
    mt.RandGridDistortiond,
    mt.RandRotate90d,
    mt.RandFlipd,
    mt.RandAxisFlipd,
    mt.RandSimulateLowResolutiond,
)
"""Random spatial augmentations that run on the GPU when their inputs are CUDA tensors: :func:`augment_on_device`
moves the data before the first of them."""


def default_num_workers(max_workers: int = 8) -> int:
    """Data-loading worker processes for one training process: the CPUs this process may use (its affinity mask),
    shared among the processes of a ``torchrun`` node (``LOCAL_WORLD_SIZE``), one left for the training loop itself;
    at most ``max_workers``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return int(max(0, min(max_workers, cpus // local - 1)))


def _is_random(t: Any) -> bool:
    """MONAI's cache boundary: the first random transform, or the first that is not a MONAI ``Transform``."""
    return isinstance(t, RandomizableTrait) or not isinstance(t, Transform)


def split_transform(transform: Union[Compose, Sequence[Callable], Callable]) -> tuple[Compose, Compose]:
    """``(deterministic prefix, the rest)`` of ``transform``, split where ``CacheDataset`` and ``PersistentDataset``
    split it (the first random transform)."""
    compose = transform if isinstance(transform, Compose) else Compose(transform)
    first = compose.get_index_of_first(_is_random)
    items = list(compose.transforms)
    if first is None:
        return Compose(items), Compose([])
    return Compose(items[:first]), Compose(items[first:])


_VOLATILE_ATTRS = frozenset({"filenames", "_tracing", "R", "_lazy", "_cached_grid"})
"""Attributes that change when a transform runs (the image reader's last file names, tracing flags) or that are
random state: not part of what a transform computes."""


def _feed(h: Any, obj: Any, seen: set[int], depth: int = 0) -> None:
    """Feed ``obj``'s configuration into the hash ``h``: classes, attributes, array and tensor contents, a module's
    state dict; the volatile attributes are skipped."""
    if depth > 12:
        h.update(b"<deep>")
        return
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
        return
    if isinstance(obj, torch.dtype) or isinstance(obj, torch.device) or isinstance(obj, np.dtype):
        h.update(f"{obj!s};".encode())
        return
    if isinstance(obj, torch.Tensor):
        arr = obj.detach().cpu().contiguous()
        h.update(f"tensor{tuple(arr.shape)}{arr.dtype};".encode())
        h.update(arr.view(torch.uint8).numpy().tobytes() if arr.numel() else b"")
        return
    if isinstance(obj, np.ndarray):
        h.update(f"ndarray{obj.shape}{obj.dtype};".encode())
        h.update(np.ascontiguousarray(obj).tobytes() if obj.dtype != object else repr(obj.tolist()).encode())
        return
    if id(obj) in seen:
        h.update(b"<seen>")
        return
    seen.add(id(obj))
    if isinstance(obj, torch.nn.Module):
        h.update(f"module:{type(obj).__qualname__};".encode())
        for k, v in obj.state_dict().items():
            h.update(k.encode())
            _feed(h, v, seen, depth + 1)
        return
    if isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _feed(h, obj[k], seen, depth + 1)
        h.update(b"}")
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        h.update(f"{type(obj).__name__}[".encode())
        for v in sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj:
            _feed(h, v, seen, depth + 1)
        h.update(b"]")
        return
    if inspect.isroutine(obj) or inspect.isclass(obj) or inspect.ismodule(obj):
        h.update(f"callable:{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))};".encode())
        return
    h.update(f"{type(obj).__module__}.{type(obj).__qualname__}(".encode())
    attrs = getattr(obj, "__dict__", None)
    if attrs is None:  # __slots__ objects: their repr (may hold an address: then the cache is missed, never wrong)
        h.update(repr(obj).encode())
    else:
        for k in sorted(attrs):
            if k in _VOLATILE_ATTRS or k.startswith("__"):
                continue
            h.update(k.encode())
            _feed(h, attrs[k], seen, depth + 1)
    h.update(b")")


def transform_hash(transforms: Any) -> bytes:
    """Hash of the cached (deterministic) transforms, part of every ``PersistentDataset`` cache file name: a change
    of preprocessing (a new fingerprint, another stage's label transform, stage 1's weights in a cascade's prior)
    misses the old cache instead of reading it. Hashes every transform's class and attributes (arrays, tensors and
    networks by content), not the state a transform picks up while running, so the hash is the same before and
    after use and across processes."""
    h = hashlib.sha256()
    _feed(h, transforms, set())
    return h.hexdigest().encode()


def _safe_globals() -> list[Any]:
    """What MetaTensor cache files hold beyond tensors: numpy arrays in the metadata and MONAI's key enums."""
    from monai.utils.enums import MetaKeys, SpaceKeys, TraceKeys

    try:  # numpy 2; numpy 1.26 (MONAI Label's environment: pydicom-seg needs numpy < 2) has this alias too
        from numpy._core.multiarray import _reconstruct as reconstruct
    except ImportError:  # numpy < 1.26
        from numpy.core.multiarray import _reconstruct as reconstruct
    dtypes = {type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32,
                                          np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)}  # fmt: skip
    return [reconstruct, np.ndarray, np.dtype, *dtypes, TraceKeys, SpaceKeys, MetaKeys]


class _DiskCache(PersistentDataset):
    """``PersistentDataset`` of MetaTensors (the metadata the random transforms and metrics read survives the disk)
    whose files load with ``weights_only=True`` (numpy metadata and MONAI enums allow-listed)."""

    def _cachecheck(self, item_transformed):
        with torch.serialization.safe_globals(_safe_globals()):
            return super()._cachecheck(item_transformed)


def cached_dataset(
    data: Sequence,
    transform: Union[Compose, Sequence[Callable]],
    cache_rate: float = 1.0,
    cache_dir: Optional[Union[str, Path]] = None,
    num_workers: Optional[int] = 1,
    copy_cache: bool = True,
    progress: bool = True,
) -> CacheDataset:
    """A dataset that computes the deterministic prefix of ``transform`` once per case and the random rest on every
    access.

    Args:
        data: the datalist.
        transform: deterministic preprocessing followed by the random augmentation (one ``Compose``).
        cache_rate: share of the cases held in memory after their first preprocessing (``CacheDataset``).
        cache_dir: ``None``: memory only (``CacheDataset``; cases beyond ``cache_rate`` are preprocessed on every
            access). A folder: every case is preprocessed once and written there (``PersistentDataset``, keyed by
            the data item and :func:`transform_hash` of the deterministic transforms), so restarts, resumed runs
            and the other DDP ranks read it instead of recomputing; ``cache_rate`` of it is also kept in memory.
        num_workers: threads filling the memory cache.
        copy_cache: deep-copy cached items before the random transforms (keep ``True`` unless they never modify
            their input in place).
    """
    if not 0.0 <= float(cache_rate) <= 1.0:
        raise ValueError(f"cache_rate must be in [0, 1], got {cache_rate}")
    if cache_dir in (None, ""):
        return CacheDataset(data, transform, cache_rate=cache_rate, num_workers=num_workers, copy_cache=copy_cache,
                            progress=progress)  # fmt: skip
    deterministic, random = split_transform(transform)
    disk = _DiskCache(list(data), deterministic, cache_dir=Path(cache_dir), hash_transform=transform_hash,
                      track_meta=True)  # fmt: skip
    return CacheDataset(disk, random, cache_rate=cache_rate, num_workers=num_workers, copy_cache=copy_cache,
                        progress=progress)  # fmt: skip


def _transform_keys(transforms: Sequence[Any]) -> list[str]:
    keys: list[str] = []
    for t in transforms:
        for k in getattr(t, "keys", ()) or ():
            if isinstance(k, str) and k not in keys:
                keys.append(k)
    return keys


_GRID_ATTRS = ("rand_affine_grid", "affine_grid", "resampler", "deform_grid", "rand_grid")


def _grids_on(transform: Any, device: torch.device) -> None:
    """Best effort: build the sampling grids of a MONAI spatial transform on ``device`` (MONAI moves a CPU grid to
    the image's device anyway; this saves the CPU grid arithmetic and the copy)."""
    inner = [v for v in vars(transform).values() if isinstance(v, Transform)]
    for obj in [transform, *inner]:
        for name in _GRID_ATTRS:
            sub = getattr(obj, name, None)
            if sub is not None and hasattr(sub, "device"):
                sub.device = device
        if isinstance(getattr(obj, "_cached_grid", None), torch.Tensor):
            obj._cached_grid = None  # a CPU identity grid; a new one is made on the GPU per call (microseconds)


def augment_on_device(
    transforms: Sequence[Any],
    device: Union[str, torch.device],
    enabled: bool = False,
    keys: Optional[Sequence[str]] = None,
) -> list[Any]:
    """``transforms`` (the random part of a training pipeline) with ``ToDeviced(keys, device)`` inserted before the
    first random spatial augmentation (:data:`SPATIAL_AUGMENTATIONS`; after the random crop, so only patches are
    copied), when ``enabled`` and ``device`` is a CUDA device; unchanged otherwise.

    ``keys`` default: every key the transforms from there on name (missing ones are skipped). Pair it with
    :func:`dataloader` ``gpu_augment=True`` (no worker processes: they cannot hand over CUDA tensors). The CPU
    part before it (the random crop, which scans the whole cached volume for its centres) then runs in a single
    thread: worth it when the spatial augmentation, not the crop, dominates the loading time (see
    ``benchmarks/gpu_throughput.py``'s data-loading share)."""
    transforms = list(transforms)
    device = torch.device(device)
    if not enabled:
        return transforms
    if device.type != "cuda":
        logger.info("gpu_augment: %s is not a CUDA device; augmenting on the CPU", device)
        return transforms
    first = next((i for i, t in enumerate(transforms) if isinstance(t, SPATIAL_AUGMENTATIONS)), len(transforms))
    rest = transforms[first:]
    keys = list(keys) if keys is not None else _transform_keys(rest) or ["image", "label"]
    for t in rest:
        if isinstance(t, SPATIAL_AUGMENTATIONS):
            _grids_on(t, device)
    return transforms[:first] + [mt.ToDeviced(keys, device=device, allow_missing_keys=True)] + rest


def dataloader(
    dataset: Any,
    batch_size: int = 1,
    shuffle: bool = False,
    num_workers: int = 0,
    gpu_augment: bool = False,
    pin_memory: Optional[bool] = None,
    device: Optional[Union[str, torch.device]] = None,
    **kwargs: Any,
) -> DataLoader:
    """The bundles' data loader.

    ``gpu_augment``: a ``ThreadDataLoader`` without worker processes (the augmentation after
    :func:`augment_on_device` makes CUDA tensors, which cannot cross process boundaries; worker threads would race on
    the shared random transforms' state): one background thread prepares the next batch beside the training loop,
    ``num_workers`` is ignored. Otherwise MONAI's ``DataLoader`` with ``num_workers`` persistent worker processes and,
    on a CUDA machine, pinned memory. ``device``: the training device; ``gpu_augment`` only applies when it is a
    CUDA device (as in :func:`augment_on_device`). ``kwargs`` (``sampler``, ``drop_last``...) go to the loader."""
    if gpu_augment and (device is None or torch.device(device).type == "cuda"):
        return ThreadDataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0, **kwargs)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    if num_workers > 0:
        kwargs.setdefault("persistent_workers", True)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      pin_memory=pin_memory, **kwargs)  # fmt: skip
