"""Stage 1 (multi-task alignment + GCT) and stage 2 (AAT, the annealing adapter) training.

One loop serves both stages: AdamW (fused on CUDA) over the LoRA weights, the code-token rows and
the GCT projectors; a cosine schedule with warm-up; bf16 autocast on CUDA, fp32 on CPU (bf16 with
the recipe's cpu_bf16, where the CPU multiplies bf16 natively); the epoch kept is the one with
the best validation NDCG@10 on a fixed subset of validation users; the state is written after
every epoch so an interrupted run resumes where it stopped (a run with other settings refuses it:
eager.train.resume). The schedule is eager.train.schedule's, model
selection eager.train.validation's.

On CUDA, batches are tokenised and packed by DataLoader workers while the GPU trains, and the
per-step losses stay on the device (no host sync per step). A stage with ``max_minutes`` fits its
step count to the clock: timed steps (re-timed over doubling windows) stretch or shrink the cosine
schedule to end when the budget does, so a run sized for one GPU lease still anneals.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from eager.data.dataset import InteractionData
from eager.decoding.trie import CodeTrie
from eager.index.item_index import ItemIndex
from eager.model.assembly import attach_lora, first_code_row
from eager.train.adapters import lora_state, train_only_code_rows
from eager.train.attention import TrainingAttention
from eager.train.batching import (
    CollatedBatches,
    approximate_lengths,
    bucketed_batches,
    token_lengths,
)
from eager.train.gct import DecompressionProjectors
from eager.train.objective import compute_loss
from eager.train.profiling import StepProfiler
from eager.train.recipes import StageConfig, TrainRecipe
from eager.train.resume import (
    check_resumable,
    restore_rng_state,
    rng_states,
    run_settings,
    set_aside,
)
from eager.train.samples import Sample
from eager.train.schedule import StepBudget
from eager.train.snapshot import REWARM_STEPS, has_snapshot, read_snapshot, snapshot_files
from eager.train.sharding import (
    CodeRowGradients,
    full_state,
    inference_weights,
    is_sharded,
    load_sharded_optimizer,
    sharded_optimizer_state,
)
from eager.train.validation import selection_cases, shared_validation_score
from eager.utils import cpu_has_bf16, seed_everything

# Without bars (``--json``, a batch job) a long epoch would be silent until it ends: the run's log gets
# a line this often with the steps done and the running mean losses (one host sync per line).
PROGRESS_EVERY_S = 60.0
# A single-process run also saves its state inside an epoch this often (minutes; 0: only at epoch
# ends), so a run stopped mid-epoch (a CPU epoch of Beauty takes hours) resumes
# from its last save rather than from the epoch's start.
SAVE_EVERY_ENV = "EAGER_SAVE_EVERY_MINUTES"
DEFAULT_SAVE_EVERY_MINUTES = 10.0


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class CompiledLayers:
    """The decoder layers' forwards through ``torch.compile``, switched on for the training steps only.

    The attention mask (block-diagonal for packed rows) is built outside the layers, in eager
    mode, so compiling stops at the layers: the many small kernels of a narrow model (norms, LoRA
    branches, casts, activations) are what fusion saves. Validation runs the plain forwards, as it
    feeds caches and tree masks the training graphs never saw. The parameters stay where they are,
    so state dicts and merges are unaffected.
    """

    def __init__(self, model, enabled: bool):
        from eager.model.assembly import causal_lm

        self.layers = list(causal_lm(model).model.layers) if enabled else []
        # One graph serves every layer (same code, parameters as inputs); lengths vary per batch.
        self.compiled = [torch.compile(layer.forward, dynamic=True) for layer in self.layers]
        self.dynamo_settings = None

    def __enter__(self):
        for layer, forward in zip(self.layers, self.compiled):
            layer.forward = forward
        # transformers >= 5.25 routes some layers' functions through the `kernels` package, whose
        # forward sets a context variable and resets it before returning. Under activation
        # checkpointing dynamo will not compile a side effect the recompute would replay, and breaks
        # the graph; a set undone inside the same forward has nothing to replay, so it may skip it.
        # (A torch release without the setting keeps the break: part of each layer runs eagerly, slower.)
        if self.layers and hasattr(torch._dynamo.config, "skip_fwd_side_effects_in_bwd_under_checkpoint"):
            self.dynamo_settings = torch._dynamo.config.patch(skip_fwd_side_effects_in_bwd_under_checkpoint=True)
            self.dynamo_settings.__enter__()
        return self

    def __exit__(self, *exc):
        for layer in self.layers:
            del layer.forward  # back to the class's forward
        if self.dynamo_settings is not None:
            self.dynamo_settings.__exit__(*exc)
            self.dynamo_settings = None
        return False


def loader_workers(device: torch.device) -> int:
    """Collation runs beside the GPU in worker processes; on CPU it shares the cores with training."""
    if device.type != "cuda":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 2))


class ActivationCheckpointing:
    """transformers' activation checkpointing of every n-th decoder layer, on for the training steps only.

    Non-reentrant: the LoRA weights get their gradients without the inputs requiring any, and the
    recomputed forward is the compiled one when the layers are compiled. Validation and export see
    the model as it was (the layers skip checkpointing outside training mode anyway)."""

    def __init__(self, model, every_n_layers: int):
        from eager.model.assembly import causal_lm

        self.lm = causal_lm(model) if every_n_layers else None
        self.every = every_n_layers
        if self.lm is not None and every_n_layers > 1 and not hasattr(self.lm, "activation_checkpointing_enable"):
            raise ValueError(f"activation_checkpointing={every_n_layers} (every {every_n_layers}th layer) needs a "
                             "transformers release with activation_checkpointing_enable (5.24 has it): upgrade it, or "
                             "use 1 (every layer)")

    def __enter__(self):
        kwargs = {"use_reentrant": False}
        if self.lm is None:
            pass
        elif hasattr(self.lm, "activation_checkpointing_enable"):  # the name in recent transformers 5 releases
            self.lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, every_n_layers=self.every)
        else:  # the older name (a deprecated alias in the recent ones), every layer
            self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        return self

    def __exit__(self, *exc):
        if self.lm is not None:
            disable = getattr(self.lm, "activation_checkpointing_disable", None) or self.lm.gradient_checkpointing_disable
            disable()
        return False


def out_of_memory_help(error: BaseException, batch_tokens: int, step: int, recipe: TrainRecipe,
                       stage: StageConfig, device: torch.device, state_file: Path) -> RuntimeError:
    """The GPU's out-of-memory error, with what ran out, what to change, and what a rerun keeps."""
    total = torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else None
    remedies = []
    if recipe.activation_checkpointing != 1:
        remedies.append("--activation-checkpointing (every layer; the same gradients, a second forward pass a step)")
    remedies.append(f"a smaller batch (stage batch_tokens, now {stage.batch_tokens}; batch_size, now {stage.batch_size})")
    where = f" of a {total:.0f} GiB GPU" if total else ""
    kept = (f" A rerun with --activation-checkpointing resumes from the last finished epoch ({state_file})."
            if state_file.exists() and recipe.activation_checkpointing != 1 else "")
    return RuntimeError(
        f"training step {step + 1} ran out of memory{where} on a batch of {batch_tokens:,} tokens. Retry with "
        + " or ".join(remedies) + f".{kept} ({type(error).__name__}: {str(error).splitlines()[0]})"
    )


def batching_lengths(tokenizer, samples: Sequence[Sample], stage: StageConfig, recipe: TrainRecipe) -> list[int]:
    """What a stage's batches are cut by: exact token lengths under a token budget, else character
    counts (enough to group samples of similar length, without tokenising)."""
    if stage.batch_tokens:
        return token_lengths(tokenizer, samples, recipe.max_len)
    return approximate_lengths(samples)


def epoch_order(count: int, generator: torch.Generator) -> list[int]:
    """An epoch's sample order. The generator also draws the GCT negatives, so only the first epoch's
    order follows from the seed alone (``torch.Generator().manual_seed(recipe.training_seed)``)."""
    return torch.randperm(count, generator=generator).tolist()


def stage_batches(order: Sequence[int], lengths: Sequence[int], stage: StageConfig, recipe: TrainRecipe,
                  epoch: int) -> list[list[int]]:
    """An epoch's batches of sample ids, in training order (one process's share of the order)."""
    return bucketed_batches(order, lengths, stage.batch_size, seed=recipe.training_seed + epoch,
                            max_tokens=stage.batch_tokens)


class LossModule(torch.nn.Module):
    """Model + projectors behind one forward, so a DDP wrapper sees (and syncs) every gradient."""

    def __init__(self, model, projectors: DecompressionProjectors | None):
        super().__init__()
        self.model, self.projectors = model, projectors

    def forward(self, batch, gct, generator):
        return compute_loss(self.model, batch, self.projectors, gct, generator)


def training_precision(recipe: TrainRecipe, cuda: bool) -> str:
    """The training steps' precision for this recipe on this machine: "bf16" (autocast) or "no" (fp32)."""
    if cuda:
        return "bf16" if recipe.bf16 else "no"
    if not recipe.cpu_bf16:
        return "no"
    if not cpu_has_bf16():
        warnings.warn("cpu_bf16 is set but this CPU has no native bf16 matmul (AVX512-BF16 or AMX): "
                      "training in fp32, which is faster here", stacklevel=2)
        return "no"
    return "bf16"


def make_accelerator(recipe: TrainRecipe):
    """One process or many (``accelerate launch`` / ``torchrun``): accelerate decides from the env."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    cuda = torch.cuda.is_available()
    # On CPU the step's own autocast carries cpu_bf16 (train_stage): accelerate's precision is fixed
    # once per process, and one `eager lab search` process trains trials with and without it.
    return Accelerator(
        cpu=not cuda, mixed_precision=training_precision(recipe, cuda=True) if cuda else "no",
        # GCT projectors get no gradient on batches without seqrec samples.
        # Frozen embedding tables are buffers: never re-broadcast them every step.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True, broadcast_buffers=False)],
    )


def train_stage(
    stage_name: str,
    model,
    tokenizer,
    index: ItemIndex,
    trie: CodeTrie,
    data: InteractionData,
    samples: Sequence[Sample],
    stage: StageConfig,
    recipe: TrainRecipe,
    projectors: DecompressionProjectors | None,
    work_dir: Path,
    log: Callable[[dict], None],
    progress: bool = True,
    restart: bool = False,
    warm_start: Path | None = None,
):
    """Train one stage in place; returns (peft model at its best epoch, best LoRA state, code rows, history).

    A saved state of this stage in ``work_dir`` is resumed (if its settings match), or with ``restart``
    set aside so the stage starts from scratch. With no saved state here, a snapshot of the stage in
    ``warm_start`` (eager.train.snapshot: a run saved on another machine) is resumed instead, with
    fresh optimizer moments and the learning rate ramped back up over ``REWARM_STEPS`` steps."""
    accelerator = make_accelerator(recipe)
    device = accelerator.device
    seed_everything(recipe.training_seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 validation matmuls (training runs in bf16 autocast)
    if stage.full_finetune:
        raise NotImplementedError("full fine-tuning is the paper's 7B recipe; our checkpoints are LoRA + code rows")
    sharded = is_sharded(accelerator)
    first_row = first_code_row(model, trie.vocab)
    model = attach_lora(model, stage.lora)
    rows = train_only_code_rows(model)
    model.to(device)
    if projectors is not None:
        projectors.to(device)
    lora_params = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    groups = [
        {"params": lora_params, "weight_decay": stage.weight_decay},
        {"params": [rows], "weight_decay": 0.0},  # decay would also shrink the frozen base rows
    ]
    if projectors is not None:
        groups.append({"params": list(projectors.parameters()), "weight_decay": stage.weight_decay})
    optimizer = torch.optim.AdamW(groups, lr=stage.lr, fused=device.type == "cuda")
    world, rank = accelerator.num_processes, accelerator.process_index
    lengths = batching_lengths(tokenizer, samples, stage, recipe)

    def epoch_batches(order: list[int], epoch: int) -> list[list[int]]:
        return stage_batches(order, lengths, stage, recipe, epoch)

    if stage.batch_tokens:  # how many batches a token budget cuts: plan one (unshuffled) share to count them
        steps_per_epoch = len(epoch_batches(list(range(len(samples) - len(samples) % world))[rank::world], 0))
    else:
        steps_per_epoch = math.ceil(math.ceil(len(samples) / world) / stage.batch_size)
    if world > 1:
        steps_per_epoch = _min_over_ranks(steps_per_epoch, device)  # every process plans the same steps
    epochs = max(1, math.ceil(stage.epochs))
    total = steps_per_epoch * epochs
    if stage.max_steps:
        total = min(total, stage.max_steps)
    budget = StepBudget(total, stage.warmup_ratio, stage.max_minutes, agree=_from_rank0,
                        single_process=world == 1)
    # The scheduler stays outside accelerate so it steps once per optimizer step on every process.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, budget.lr_factor)
    generator = torch.Generator().manual_seed(recipe.training_seed)
    gct = recipe.gct if projectors is not None else None
    cases = selection_cases(data, recipe)
    eval_batch = 64 if device.type == "cuda" else 8
    workers = loader_workers(device)
    if workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are the parallelism
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    cpu_autocast = torch.autocast("cpu", dtype=torch.bfloat16,
                                  enabled=device.type == "cpu" and training_precision(recipe, False) == "bf16")
    compiled = CompiledLayers(model, recipe.compile)
    attention = TrainingAttention(model, recipe.attention)
    checkpointing = ActivationCheckpointing(model, recipe.activation_checkpointing)
    profiler = StepProfiler.from_env(work_dir / f"profile_{stage_name}.txt", sync, device,
                                     enabled=accelerator.is_main_process)

    state_file = work_dir / f"{stage_name}_state.pt"
    settings = run_settings(stage_name, stage, recipe, data.name, len(samples), len(tokenizer), model.config)
    start_epoch, step, history, best = 0, 0, [], {"ndcg@10": -1.0}
    best_lora, best_rows, sharded_optimizer, in_epoch = None, None, None, None
    save_every_s = 60.0 * float(os.environ.get(SAVE_EVERY_ENV, DEFAULT_SAVE_EVERY_MINUTES))
    saves_in_epoch = save_every_s > 0 and world == 1 and not sharded
    if restart and state_file.exists():
        if accelerator.is_main_process:
            log({"stage": stage_name, "set_aside": str(set_aside(state_file))})
        accelerator.wait_for_everyone()  # no process may look for the state before it is gone
    rewarm_from = None  # the step a warm start resumed at: its learning rate ramps up from there
    from_snapshot = not state_file.exists() and not restart and has_snapshot(warm_start, stage_name)
    if state_file.exists() or from_snapshot:  # resume
        if from_snapshot:
            saved = read_snapshot(warm_start, stage_name)
            check_resumable(saved.get("settings"), settings, snapshot_files(Path(warm_start), stage_name)[1])
        else:
            saved = torch.load(state_file, weights_only=False)
            check_resumable(saved.get("settings"), settings, state_file)
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, saved["lora"])
        with torch.no_grad():
            rows[first_row:] = saved["rows"].to(rows.device)
        if saved["optimizer"] is None:  # a snapshot: Adam's moments start again
            rewarm_from = saved["step"]
        elif sharded:  # a sharded optimizer takes its (whole) state once its parameters are sharded
            sharded_optimizer = saved["optimizer"]
        else:
            optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if rewarm_from is not None:
            _rewarm(optimizer, scheduler, 0)
        if projectors is not None and saved.get("projectors"):
            projectors.load_state_dict(saved["projectors"])
        start_epoch, step, history, best = saved["epoch"], saved["step"], saved["history"], saved["best"]
        budget.total = saved.get("total", budget.total)
        best_lora, best_rows = saved["best_lora"], saved["best_rows"]
        generator.set_state(saved["generator"])
        in_epoch = saved.get("in_epoch")
        if len(saved.get("rng", [])) == world:  # each process's dropout stream goes on where it stopped
            restore_rng_state(saved["rng"][rank], device)
        if accelerator.is_main_process:
            log({"stage": stage_name, "resumed_at_epoch": start_epoch,
                 **({"resumed_at_batch": in_epoch["done"]} if in_epoch else {}),
                 **({"warm_start": str(warm_start)} if from_snapshot else {})})

    module, optimizer = accelerator.prepare(LossModule(model, projectors), optimizer)
    # After prepare: FSDP replaces the parameters (the optimizer's groups are switched to the new ones).
    code_rows = CodeRowGradients(model, first_row)
    trained = [p for g in optimizer.param_groups for p in g["params"]]
    if sharded_optimizer is not None:
        load_sharded_optimizer(module, optimizer, sharded_optimizer)
    run_started, run_steps = time.monotonic(), 0
    for epoch in range(start_epoch, epochs):
        if step >= budget.total:
            break
        model.train()
        # Same permutation on every process (same seed), each takes its own stride of it.
        # Equal shares, or DDP would wait forever for a process's extra step.
        resuming = in_epoch if in_epoch is not None and in_epoch["epoch"] == epoch else None
        generator_now = generator.get_state()
        if resuming:  # the epoch's order comes from the generator as it was when the epoch began
            generator.set_state(resuming["epoch_generator"])
        epoch_generator = generator.get_state()
        order = epoch_order(len(samples), generator)
        order = order[: len(order) - len(order) % world][rank::world]
        batches = epoch_batches(order, epoch)
        if stage.batch_tokens and world > 1:  # token budgets cut each share into its own count: DDP needs one
            batches = batches[: _min_over_ranks(len(batches), device)]
        started, tokens, sums, count, steady_from = time.monotonic(), 0, {}, 0, None
        if resuming:  # skip what the saved run trained, and go on with its counts and its generator
            generator.set_state(generator_now)
            batches = batches[resuming["done"]:]
            count, tokens = resuming["done"], resuming["tokens"]
            sums = {k: torch.tensor(v, device=device) for k, v in resuming["sums"].items()}
            started -= resuming["seconds"]
        next_report = started + PROGRESS_EVERY_S
        next_save = time.monotonic() + save_every_s
        stream = CollatedBatches(tokenizer, samples, batches, recipe.max_len, recipe.pack_len).stream(
            workers, pin_memory=device.type == "cuda")
        bar = tqdm(stream, total=min(len(batches), budget.total - step), desc=f"{stage_name} epoch {epoch + 1}/{epochs}",
                   disable=not progress or not accelerator.is_main_process, leave=False)
        # (no-ops unless the recipe compiles, asks for varlen attention or checkpoints activations)
        with compiled, attention, checkpointing:
            for batch in bar:
                if step >= budget.total:
                    break
                batch_tokens = batch.tokens  # counted on the host, before the copy
                profiler.before_step(step + 1)
                batch = batch.to(device, non_blocking=True)
                try:
                    with cpu_autocast:
                        losses = module(batch, gct, generator)
                    optimizer.zero_grad(set_to_none=True)
                    accelerator.backward(losses["loss"])
                except torch.OutOfMemoryError as error:
                    raise out_of_memory_help(error, batch_tokens, step, recipe, stage, device, state_file) from error
                code_rows.mask_base_rows()
                accelerator.clip_grad_norm_(trained, 1.0)
                optimizer.step()
                scheduler.step()
                step, tokens, count, run_steps = step + 1, tokens + batch_tokens, count + 1, run_steps + 1
                if rewarm_from is not None and step - rewarm_from < REWARM_STEPS:
                    _rewarm(optimizer, scheduler, step - rewarm_from)
                profiler.after_step(step, batch_tokens)
                if count == StepBudget.CALIBRATE_AFTER:  # past compiling and start-up: the steady rate starts here
                    sync()
                    steady_from = (time.monotonic(), tokens)
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + value.detach()
                budget.observe(step, run_steps, run_started, sync)
                if count % 25 == 1:
                    bar.set_postfix(loss=f"{losses['loss'].item():.3f}", steps=budget.total)
                now = time.monotonic()
                if accelerator.is_main_process and now >= next_report:
                    # The step never waits on the GPU, so the host's clock runs ahead of the work it
                    # queued: once a minute, wait for it, so these rates stand alone (a run stopped
                    # before its epoch ends leaves them as its only measurement).
                    sync()
                    now = time.monotonic()
                    log({"stage": stage_name, "epoch": epoch + 1, "step": step, "planned_steps": budget.total,
                         "in_epoch": True, "seconds": round(now - started, 1),
                         "tokens_per_s": round(tokens / (now - started)), **_steady_rate(steady_from, count, now, tokens),
                         **_mean_losses(sums, count)})
                    next_report = now + PROGRESS_EVERY_S
                if saves_in_epoch and now >= next_save and step < budget.total:
                    write_state(state_file, {
                        "lora": lora_state(model), "rows": code_rows.code_rows(first_row),
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "projectors": projectors.state_dict() if projectors is not None else None,
                        "epoch": epoch, "step": step, "total": budget.total, "history": history, "best": best,
                        "best_lora": best_lora, "best_rows": best_rows, "generator": generator.get_state(),
                        "rng": rng_states(device, world), "settings": settings,
                        "in_epoch": {"epoch": epoch, "done": count, "tokens": tokens,
                                     "sums": {k: float(v) for k, v in sums.items()},
                                     "seconds": time.monotonic() - started, "epoch_generator": epoch_generator},
                    })
                    log({"stage": stage_name, "epoch": epoch + 1, "step": step, "saved_in_epoch": count})
                    next_save = time.monotonic() + save_every_s
        in_epoch = None
        profiler.close()  # a window the epoch ended inside
        sync()
        finished = time.monotonic()
        seconds = finished - started
        speed = _steady_rate(steady_from, count, finished, tokens)  # and below, the peak GPU memory
        if device.type == "cuda":
            speed["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
            torch.cuda.reset_peak_memory_stats(device)
        # Every process validates a share of the users and gets the score of all, so all keep the same best.
        with inference_weights(module, sharded):
            metrics = shared_validation_score(model, tokenizer, index, trie, data, cases, recipe.eval_beams,
                                              eval_batch, world, rank, recipe.prompt_style, sharded)
        ranks = metrics.pop("ranks")  # kept with the best epoch, not logged: the log stays one line an epoch
        record = {"stage": stage_name, "epoch": epoch + 1, "step": step, "seconds": round(seconds, 1),
                  "tokens_per_s": round(tokens / max(seconds, 1e-9)), **speed, "tokens": tokens,
                  "planned_steps": budget.total,
                  **_mean_losses(sums, count),
                  **{f"valid_{k}": v for k, v in metrics.items()}}
        # Whole tensors, gathered by every process alike (collectives under FSDP), written by one.
        lora_now, rows_now = lora_state(model), code_rows.code_rows(first_row)
        projectors_now = full_state(projectors.state_dict()) if projectors is not None else None
        optimizer_now = sharded_optimizer_state(module, optimizer) if sharded else optimizer.state_dict()
        rng_now = rng_states(device, world)
        if metrics["ndcg@10"] > best["ndcg@10"]:
            best = {**metrics, "epoch": epoch + 1, "ranks": ranks}
            best_lora, best_rows = lora_now, rows_now
            record["best"] = True
        history.append(record)
        if not accelerator.is_main_process:
            continue
        write_state(state_file, {
            "lora": lora_now, "rows": rows_now, "optimizer": optimizer_now,
            "scheduler": scheduler.state_dict(), "projectors": projectors_now,
            "epoch": epoch + 1, "step": step, "total": budget.total, "history": history, "best": best, "best_lora": best_lora,
            "best_rows": best_rows, "generator": generator.get_state(), "rng": rng_now, "settings": settings,
        })
        log(record)  # after the state is on disk, so an interrupted run loses nothing logged
    accelerator.wait_for_everyone()
    info = {"history": history, "best": best, "sharded": sharded}
    if sharded:  # no in-place restore into shards: the caller rebuilds from base + the best weights
        return model, best_lora, best_rows, info

    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, best_lora)
    with torch.no_grad():
        rows[first_row:] = best_rows.to(rows.device)
    return model, best_lora, best_rows, info


def _rewarm(optimizer, scheduler, steps_done: int) -> None:
    """The schedule's learning rate scaled by how far the warm start's ramp has come (the scheduler
    sets each group's rate afresh every step, so the scaling never compounds)."""
    ramp = min(1.0, (steps_done + 1) / REWARM_STEPS)
    for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
        group["lr"] = lr * ramp


def write_state(path: Path, state: dict) -> None:
    """Save a stage's state whole or not at all: a run stopped while writing keeps the previous one."""
    partial = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, partial)
    os.replace(partial, path)


def _mean_losses(sums: dict, count: int) -> dict[str, float]:
    """Each loss summed over the epoch's steps so far (device tensors), as a mean per step."""
    return {f"loss_{k}": float(v) / max(count, 1) for k, v in sums.items()}


def _steady_rate(steady_from: tuple[float, int] | None, count: int, now: float, tokens: int) -> dict[str, int]:
    """``tokens_per_s_steady`` from the step that ended calibration (start-up, compiling) to ``now``,
    once steps after it have been timed; empty before."""
    if steady_from is None or count <= StepBudget.CALIBRATE_AFTER:
        return {}
    started, tokens_then = steady_from
    return {"tokens_per_s_steady": round((tokens - tokens_then) / max(now - started, 1e-9))}


def _min_over_ranks(value: int, device: torch.device) -> int:
    if not torch.distributed.is_initialized():
        return value
    shared = torch.tensor([value], device=device)
    torch.distributed.all_reduce(shared, op=torch.distributed.ReduceOp.MIN)
    return int(shared.item())


def _from_rank0(value):
    from accelerate.utils import broadcast_object_list

    if not torch.distributed.is_initialized():
        return value
    shared = [value]
    broadcast_object_list(shared)
    return shared[0]


def make_logger(path: Path, echo: bool) -> Callable[[dict], None]:
    path.parent.mkdir(parents=True, exist_ok=True)

    def log(record: dict) -> None:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if echo:
            tqdm.write(json.dumps(record))

    return log


def gct_tables(index: ItemIndex, data: InteractionData, tables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Embedding tables re-ordered to the index's row order (what GCT targets refer to)."""
    order = data.indices_of(index.keys)
    return {name: np.asarray(t)[order] for name, t in tables.items()}
