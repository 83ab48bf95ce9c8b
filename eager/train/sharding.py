"""What the trainer does differently when accelerate shards the model (FSDP2, for 7B backbones).

``accelerate launch --config_file configs/accelerate/fsdp2.yaml`` runs the trainer unchanged; under
FSDP2 every parameter is a DTensor holding this process's rows, and a forward all-gathers each
wrapped layer's weights. Four things follow, each handled here so the training loop stays one loop:

- a gradient hook on the embedding table does not survive ``fully_shard`` (it swaps in new
  parameter objects), so the base rows are kept frozen by masking the table's gradient after
  every backward (:class:`CodeRowGradients`), sharded or not;
- saved weights are gathered into whole tensors first (:func:`full_tensor`), a collective that
  every process runs, in the same order, and so is the optimizer's state
  (:func:`sharded_optimizer_state`, torch's distributed-checkpoint API);
- validation's beam search calls the peft model below the FSDP root, so the root's own weights
  (embeddings, final norm) are gathered for it (:func:`inference_weights`), and every process runs
  the same number of search batches (:func:`lockstep_rounds`): each forward is a collective;
- the trained model cannot be merged in place; the pipeline rebuilds the backbone from the base
  and the stage's gathered weights instead.

accelerate enables FSDP only on accelerator devices; the CPU test (``tests/sharded_worker.py``) runs
this path on two gloo processes by switching accelerate's state to FSDP after it starts.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch


def is_sharded(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: gathered from every process when it is a DTensor shard, else itself."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with every tensor whole and on the CPU (a collective when sharded)."""
    return {k: full_tensor(v).detach().cpu().clone() for k, v in state.items()}


class CodeRowGradients:
    """Gradients reach only the code-token rows of the (tied) embedding table.

    Built after ``accelerator.prepare``: it reads the table as the engine left it (a DTensor under
    FSDP2, whose mask is then sharded the same way, so each process masks its own rows).
    """

    def __init__(self, model, first_row: int):
        self.weight = model.get_input_embeddings().weight
        keep = torch.zeros(self.weight.shape[0], 1, dtype=self.weight.dtype)
        keep[first_row:] = 1
        placements = getattr(self.weight, "placements", None)
        if placements is not None:
            from torch.distributed.tensor import distribute_tensor

            keep = distribute_tensor(keep.to(self.weight.device_mesh.device_type), self.weight.device_mesh, placements)
        self.keep = keep.to(self.weight.device) if placements is None else keep

    def mask_base_rows(self) -> None:
        if self.weight.grad is not None:
            self.weight.grad.mul_(self.keep)

    def code_rows(self, first_row: int) -> torch.Tensor:
        """The trained rows, whole and on the CPU (a collective when sharded)."""
        return full_tensor(self.weight.detach())[first_row:].cpu().clone()


@contextmanager
def inference_weights(module, sharded: bool):
    """Gather the FSDP root's own weights while the model below it is called directly (validation)."""
    if not sharded:
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()


def lockstep_rounds(cases: int, world: int, batch_size: int) -> int:
    """Search batches every process runs when the cases are dealt round-robin: the first share's count."""
    return math.ceil(math.ceil(cases / world) / batch_size)


def sharded_optimizer_state(module, optimizer) -> dict:
    """The optimizer's state with whole tensors keyed by parameter name (torch's distributed checkpoint API)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    return get_optimizer_state_dict(module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_sharded_optimizer(module, optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))
