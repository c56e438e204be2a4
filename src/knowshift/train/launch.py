"""How this process was launched: alone, or as one of several under `accelerate launch`.

`accelerate launch` (torchrun underneath) starts one process per device and tells each its
place in environment variables (RANK, WORLD_SIZE, LOCAL_RANK) and, for FSDP, ACCELERATE_USE_FSDP.
These helpers read them without importing torch, so the CLI can check a launch before loading
anything; `launch_device` sets up the process group itself.
"""

from __future__ import annotations

import os


def n_processes() -> int:
    """How many processes train together (1 without a launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this process is the main one (RANK 0) or alone: the one that writes the run
    folder's files and the results database."""
    return os.environ.get("RANK", "0") == "0"


def uses_fsdp() -> bool:
    """Whether the launch shards the model over its processes (FSDP) rather than copying it."""
    return n_processes() > 1 and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def launch_device(device: str):
    """The device to load the model on, with the process group set up for a launch: under a
    launch each process trains on its own device (cuda:LOCAL_RANK, or the CPU with gloo), and
    an FSDP launch loads on the CPU, as the model need not fit one GPU; FSDP then shards it."""
    import torch
    from accelerate import PartialState

    from knowshift.errors import KnowshiftError
    from knowshift.models.loader import resolve_device

    resolved = resolve_device(device)
    if n_processes() == 1:
        return resolved
    if device not in ("auto", resolved.type):
        raise KnowshiftError(
            f"--device {device} under a launch of {n_processes()} processes would put them all "
            "on one device; leave --device auto (each process takes its own) or give cpu or cuda"
        )
    # accelerate reads a CPU launch as distributed only when told it runs on the CPU.
    state = PartialState(cpu=resolved.type == "cpu")
    if uses_fsdp():
        if state.device.type == "cpu":
            raise KnowshiftError(
                "FSDP needs GPUs (accelerate shards models over GPUs only); on CPUs launch "
                "with configs/accelerate/cpu-2proc.yaml (DDP)"
            )
        return torch.device("cpu")
    return resolved if state.device.type == "cpu" else state.device


def training_device(loaded_device):
    """The device training runs on: the loaded model's, but under FSDP (which loads on the CPU)
    this process's GPU, where its shard goes."""
    if not uses_fsdp():
        return loaded_device
    from accelerate import PartialState

    return PartialState().device


def launch_record() -> dict:
    """What a run records of its launch: the number of processes and how they share the work
    (none, ddp: a copy of the model each, fsdp: the model sharded over them)."""
    sharing = "none" if n_processes() == 1 else "fsdp" if uses_fsdp() else "ddp"
    return {"processes": n_processes(), "parallelism": sharing}
