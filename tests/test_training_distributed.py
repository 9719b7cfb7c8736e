"""The multi-GPU configs' process group is released while the interpreter is still whole."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from monai_effseg.utils import as_flag

SCRIPT = textwrap.dedent(
    """
    import atexit, gc, os, weakref
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="{port}", RANK="0", WORLD_SIZE="1")
    import torch
    import torch.distributed as dist
    from monai_effseg.training import init_process_group

    gc.disable()  # only the exit hook may collect the cycle below
    state = {{}}
    # registered first, so it runs last (atexit is last in, first out): after the hook init_process_group adds
    atexit.register(lambda: print("at exit: wrapper alive", state["ddp"]() is not None, "group", dist.is_initialized()))
    init_process_group()
    ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
    ddp(torch.ones(1, 2)).sum().backward()
    holder = {{"network": ddp}}
    holder["self"] = holder  # what a finished ignite workflow leaves: the wrapper reachable only through a cycle
    state["ddp"] = weakref.ref(ddp)
    del ddp, holder
    {finalize}
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("finalize", ["dist.destroy_process_group()", "pass"], ids=["finalized", "not_finalized"])
def test_process_group_and_ddp_wrapper_are_released_before_interpreter_shutdown(finalize):
    script = SCRIPT.format(port=_free_port(), finalize=finalize)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "at exit: wrapper alive False group False" in proc.stdout, proc.stdout + proc.stderr[-2000:]


@pytest.mark.parametrize(
    "typed,expected", [(True, True), (False, False), ("false", False), ("True", True), (" TRUE ", True), (0, False)]
)
def test_as_flag_reads_a_flag_however_it_was_typed(typed, expected):
    assert as_flag(typed, "optimize") is expected


@pytest.mark.parametrize("typed", ["no", "", 2, None, 0.5])
def test_as_flag_names_the_flag_it_cannot_read(typed):
    with pytest.raises(ValueError, match="--optimize must be True or False"):
        as_flag(typed, "optimize")
