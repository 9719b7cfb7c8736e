"""The process group of the bundles' multi-GPU configs (``torchrun ... configs/multi_gpu_train.json``).

``destroy_process_group()`` in a config's ``finalize`` is not the end of the group: the ``DistributedDataParallel``
wrapper still holds it, and the finished workflow that holds the wrapper is freed only with its reference cycles
(ignite engines and their handlers), which nothing collects before the interpreter shuts down. The group is then
destroyed during interpreter finalization, and gloo's destructor, releasing the tensors of its last collectives,
can abort the process (``terminate called without an active exception``, SIGABRT) after a finished run. An
:mod:`atexit` hook collects those cycles and destroys any group left while the interpreter is still whole (the fix
PyTorch discussed for its own ``init_process_group``, pytorch/pytorch#179291, is not upstream).
"""

from __future__ import annotations

import atexit
import gc

import torch
import torch.distributed as dist

__all__ = ["init_process_group", "release_process_groups"]

_hooked = False


def init_process_group() -> None:
    """Join the ``torchrun`` group (NCCL with CUDA, gloo on CPUs) unless this process already has, and release it
    before the interpreter shuts down (:func:`release_process_groups`). Returns ``None`` so that it can be a
    bundle ``initialize`` expression."""
    global _hooked
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if not _hooked:
        atexit.register(release_process_groups)
        _hooked = True


def release_process_groups() -> None:
    """Free what still holds a process group (a finished workflow's DDP wrapper, through its reference cycles),
    then destroy the groups that remain."""
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
