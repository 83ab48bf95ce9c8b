"""Run by test_sharded_training: `eager train`'s pipeline (stage 1 with GCT, then AAT) on two CPU processes.

Launched by ``torchrun`` (DDP) or by ``accelerate launch --config_file configs/accelerate/fsdp2.yaml``
(FSDP2). accelerate turns FSDP on only for accelerator devices: on CPU it starts in multi-CPU DDP
mode with the config's plugin settings in the environment, so this worker switches the state to
FSDP with that plugin. Everything after that (wrapping, sharding, gathering) is accelerate's and
torch's own code, as on GPUs.

``stop_after_epoch``: rank 0's log raises after that many epoch records (the state is on disk by
then), so the run dies like an interrupted one; a second launch resumes it.
"""

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eager.model.variants import get_variant
from eager.train import trainer as train
from eager.train.pipeline import train_variant
from tests.conftest import make_cyclic_data
from tests.tiny import TEST_RECIPE, toy_embeddings, toy_index

# Small enough for seconds, big enough for several steps and two epochs per stage on each process.
SHARDED_TEST_RECIPE = replace(
    TEST_RECIPE,
    stage1=replace(TEST_RECIPE.stage1, epochs=2, max_steps=None, batch_size=16),
    stage2=replace(TEST_RECIPE.stage2, epochs=2, max_steps=None, batch_size=16),
    # 17 users: shares of 9 and 8, two search batches of 8 against one, so validation pads a lock-step round.
    eval_users=17, eval_beams=10,
)


def fsdp_on_cpu(make_accelerator):
    def make(recipe):
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        accelerator = make_accelerator(recipe)
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # read from the launcher's env
        accelerator.state.distributed_type = DistributedType.FSDP
        return accelerator

    return make


def main(base_dir: str, out_dir: str, stop_after_epoch: str = "") -> None:
    if os.environ.get("ACCELERATE_USE_FSDP") == "true":
        train.make_accelerator = fsdp_on_cpu(train.make_accelerator)
    if stop_after_epoch:
        logged = train.make_logger

        def make_logger(path, echo):
            log, epochs = logged(path, echo), []

            def stopping(record):
                log(record)
                if "epoch" in record:
                    epochs.append(record)
                if len(epochs) >= int(stop_after_epoch):
                    raise KeyboardInterrupt("stopped by the test")

            return stopping

        from eager.train import pipeline

        pipeline.make_logger = make_logger
    data = make_cyclic_data()
    out = Path(out_dir)
    result = train_variant(data, get_variant("full"), SHARDED_TEST_RECIPE, out / "checkpoint", out / "artifacts",
                           base_dir, progress=False, index=toy_index(data), tables=toy_embeddings(data))
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    (out / f"rank{rank}.json").write_text(json.dumps({
        "world": dist.get_world_size() if dist.is_initialized() else 1,
        "history": result.get("history"),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
