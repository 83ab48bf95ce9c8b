"""Run by test_llm_stack under torchrun: one LoRA stage on two CPU processes (gloo)."""

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eager.decoding.trie import CodeTrie
from eager.model.code_tokens import add_code_tokens  # noqa: E402
from eager.train.samples import build_samples
from eager.train.trainer import train_stage  # noqa: E402
from eager.train.validation import selection_cases, validation_ranks, validation_score  # noqa: E402
from tests.conftest import make_cyclic_data  # noqa: E402
from tests.tiny import TEST_RECIPE  # noqa: E402
from tests.tiny import load_tiny as _tiny
from tests.tiny import toy_index as _index


def main(base_dir: str, out_dir: str, batch_tokens: str = "") -> None:
    data = make_cyclic_data()
    model, tok = _tiny(base_dir)
    index = _index(data)
    trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", data))
    samples = build_samples(data, index, ("seqrec",))[:64]
    # With a token budget each process cuts its own share into its own number of batches.
    stage = replace(TEST_RECIPE.stage2, epochs=1, max_steps=None, batch_size=8,
                    batch_tokens=int(batch_tokens) if batch_tokens else None)
    # 7 users: the two shares differ in size; 20 beams rank 10 of the 50 items, so some users score.
    recipe = replace(TEST_RECIPE, eval_users=7, eval_beams=20)
    trained, lora, rows, info = train_stage("stage2", model, tok, index, trie, data, samples, stage, recipe, None,
                                            Path(out_dir), lambda r: None, progress=False)
    digest = hashlib.sha256()
    for key in sorted(lora):
        digest.update(lora[key].float().numpy().tobytes())
    digest.update(rows.float().numpy().tobytes())
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    lora_b = [v for k, v in lora.items() if "lora_B" in k]
    # The trainer's score came from both processes' shares; this one is every case on this process alone.
    alone = validation_score(trained, tok, index, trie, data, selection_cases(data, recipe), recipe.eval_beams, 8)
    alone_ranks = validation_ranks(trained, tok, index, trie, data, selection_cases(data, recipe), recipe.eval_beams, 8)
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps({
        "world": world, "digest": digest.hexdigest(), "steps": info["history"][-1]["step"],
        "lora_b_moved": bool(any(v.abs().sum() > 0 for v in lora_b)),
        "shared_valid": {k: info["history"][-1][f"valid_{k}"] for k in ("recall@10", "ndcg@10", "users")},
        "alone_valid": {**alone, "users": 7},
        # The best epoch's ranks, gathered from both shares, back in the order of the users.
        "shared_ranks": info["best"]["ranks"], "alone_ranks": alone_ranks,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
