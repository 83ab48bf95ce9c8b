"""Named training recipes and the paper's variants, as importable constants."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from eager.model.lora import LoraSettings
from eager.model.prompts import DEFAULT_PROMPT_STYLE, history_window
from eager.model.variants import Variant
from eager.train.gct import GCTConfig


@dataclass(frozen=True)
class StageConfig:
    tasks: tuple[str, ...]
    epochs: float
    lr: float
    full_finetune: bool = False  # else LoRA on the transformer + the new code-token rows
    lora: LoraSettings = field(default_factory=LoraSettings)
    warmup_ratio: float = 0.01
    weight_decay: float = 0.01
    batch_size: int = 32
    # Also close a batch before it passes this many tokens (exact lengths, tokenised up front): a
    # fixed sample count in length-sorted buckets swings 4x in tokens, and memory with it.
    batch_tokens: int | None = None
    max_steps: int | None = None  # a hard cap (smoke runs, bounded CPU runs)
    max_minutes: float | None = None  # a wall-clock budget: the step count (and cosine) is fitted to it

    def exact_steps(self, steps: int) -> StageConfig:
        """This stage for exactly ``steps`` optimizer steps (fewer only where its epochs end first):
        without its clock budget, which would cut them short on a slower GPU."""
        return replace(self, max_steps=steps, max_minutes=None)


@dataclass(frozen=True)
class TrainRecipe:
    name: str
    stage1: StageConfig
    stage2: StageConfig
    gct: GCTConfig = field(default_factory=GCTConfig)
    token_init: str = "text"  # eager.model.code_tokens.TOKEN_INITS: "text", "mean" or "mean+text"
    max_len: int = 384
    pack_len: int | None = None  # pack each batch's samples into rows of this many tokens (None: pad)
    # The history a model trains on and reads. Training samples hold at most this many items, and at
    # inference (model selection, `eager eval`, `eager recommend`, the demo) the model reads the last
    # `history_window` = min(max_history, 20) items of what it is given. The protocol gives every
    # model the last 20 (eager.data.split.DEFAULT_MAX_HISTORY); a lower cap is the model's own choice
    # to read fewer, as a SASRec's max_len is. Read at the 20 it never trained on, a 5-item model
    # trails; read at its 5 it ties the 20-item one (Scientific, eager/lab/levers.md, lever 8).
    max_history: int = 20
    prompt_style: str = DEFAULT_PROMPT_STYLE  # or "compact" (eager.model.prompts.PROMPT_STYLES): ~2.2x fewer tokens a sample
    eval_users: int = 2000  # validation users used for model selection
    # Train on a seeded random subset of this many users (bounded CPU runs, several epochs of a small
    # share); model selection then validates those same users, as the protocol scores trained users.
    max_users: int | None = None
    eval_beams: int = 20
    # `seed` picks the users (a max_users subset, the validation users of model selection);
    # `train_seed`, when set, alone drives what is random in training: the LoRA start, the sample
    # order and batches, prompt templates, the GCT projectors and negatives. Two runs that differ only
    # in it train the same users and are selected on the same users, so they pair user by user: the
    # run-to-run noise floor against which a lever's difference is read.
    seed: int = 42
    train_seed: int | None = None
    bf16: bool = True  # on CUDA; CPU trains in fp32 unless cpu_bf16
    # bf16 autocast in a CPU's training steps too, where it multiplies bf16 natively (AVX512-BF16 or
    # AMX, eager.utils.cpu_has_bf16; elsewhere bf16 is emulated and slower, so training stays fp32
    # with a warning). Measured on a 2-core AVX512-BF16 EPYC: eager/lab/levers.md, "Training faster on a CPU".
    cpu_bf16: bool = False
    compile: bool = False  # torch.compile the decoder layers for the training steps (see CompiledLayers)
    # Attention of the packed training steps: "sdpa" (transformers' block-diagonal mask over whole rows)
    # or "varlen" (each sample attends over its own length only: eager.train.attention). Needs pack_len.
    attention: str = "sdpa"
    # Recompute decoder layers' activations in the backward pass instead of keeping them
    # (transformers' activation checkpointing) in every n-th layer: 0 none, 1 every layer, 2 every
    # other one, ... The same losses and gradients for a second forward pass through those layers,
    # and a step no longer keeps ~1 MiB a token in them. What lets a recipe sized on an H200
    # (multitask-short: 256-sample batches, up to ~100k tokens) train on an 80 GB H100: with every layer,
    # there in 13.6 GiB, at 41k tokens/s against the H200's 75k without (docs/training.md, fifth
    # lease); every other layer keeps about half the activations for half the recompute.
    activation_checkpointing: int = 0

    @property
    def history_window(self) -> int:
        """How many of a history's last items the model reads at inference."""
        return history_window(self.max_history)

    @property
    def training_seed(self) -> int:
        """The seed of training's randomness (``train_seed``, else ``seed``)."""
        return self.seed if self.train_seed is None else self.train_seed

    def __post_init__(self):
        from eager.train.attention import ATTENTION_CHOICES

        if self.attention not in ATTENTION_CHOICES:
            raise ValueError(f"unknown attention {self.attention!r}; choose one of: {', '.join(ATTENTION_CHOICES)}")
        if isinstance(self.activation_checkpointing, bool) or not isinstance(self.activation_checkpointing, int) \
                or self.activation_checkpointing < 0:
            raise ValueError(f"activation_checkpointing is every how many decoder layers to checkpoint (0: none, "
                             f"1: all, 2: every other), not {self.activation_checkpointing!r}")
        if isinstance(self.max_history, bool) or not isinstance(self.max_history, int) or self.max_history < 1:
            raise ValueError(f"max_history is how many history items a sample holds and the model reads: "
                             f"at least 1, not {self.max_history!r}")
        if self.max_users is not None and self.max_users < 1:
            raise ValueError(f"max_users must be a positive number of users, not {self.max_users}")
        if self.attention == "varlen" and not self.pack_len:
            raise ValueError("attention='varlen' reads the boundaries of packed rows: set pack_len too")
        for name, stage in (("stage1", self.stage1), ("stage2", self.stage2)):
            if stage.batch_tokens is not None and stage.batch_tokens < self.max_len:
                raise ValueError(f"{name}.batch_tokens ({stage.batch_tokens}) is below max_len ({self.max_len}): "
                                 "a long sample would not fit any batch")


# Each recipe is a frozen constant with a one-line docstring of where it came from; the measurements
# behind each choice are in docs/training.md ("Recipes") and eager/lab/levers.md.

PAPER_RECIPE = TrainRecipe(
    name="paper",
    stage1=StageConfig(tasks=("seqrec", "item2index", "index2item", "fusionseqrec"), epochs=3, lr=5e-5,
                       full_finetune=True, batch_size=128),
    stage2=StageConfig(tasks=("seqrec",), epochs=1, lr=5e-5, batch_size=128),
)
"""The authors' LLaMA-7B recipe (LC-Rec's tasks, full fine-tuning), for reference: its checkpoint would
exceed the 12 MiB limit, so `eager train` refuses to export it."""

# LoRA dropout 0: an identity branch fuses away (~14 % of a CPU step went to drawing dropout masks).
_FAST_LORA = LoraSettings(dropout=0.0)

SMOLLM2_RECIPE = TrainRecipe(
    name="smollm2",
    stage1=StageConfig(tasks=("seqrec", "item2index", "index2item", "fusionseqrec"), epochs=8, lr=1e-3,
                       batch_size=512, batch_tokens=32_768, lora=_FAST_LORA),
    stage2=StageConfig(tasks=("seqrec",), epochs=1, lr=5e-4, batch_size=512, batch_tokens=32_768, lora=_FAST_LORA),
    pack_len=2048, compile=True, attention="varlen", token_init="mean",
)
"""The paper's four tasks scaled to SmolLM2-135M on a GPU (LoRA r=8, 8 epochs, compiled varlen steps at
~313k tokens/s on an H200); untuned: no GPU has yet run it to the end."""

MULTITASK_SHORT_RECIPE = TrainRecipe(
    name="multitask-short",
    stage1=StageConfig(tasks=("seqrec", "item2index", "index2item", "fusionseqrec"), epochs=1, lr=1e-3,
                       batch_size=256, warmup_ratio=0.03, max_minutes=3.25),
    stage2=StageConfig(tasks=("seqrec",), epochs=1, lr=5e-4, batch_size=256, warmup_ratio=0.03, max_minutes=1.1),
    pack_len=2048, eval_users=1000,
)
"""The four tasks for ~4.5 GPU-minutes, each stage's steps fitted to its clock budget: what one short
H100/H200 lease holds (start-up and evaluation included)."""

MULTITASK_QUARTER_EPOCH_RECIPE = replace(
    MULTITASK_SHORT_RECIPE, name="multitask-quarter-epoch",
    stage1=MULTITASK_SHORT_RECIPE.stage1.exact_steps(274),
    stage2=MULTITASK_SHORT_RECIPE.stage2.exact_steps(188),
)
"""multitask-short frozen at the steps its Beauty run took on an H200 (274 + 188 steps of 256 samples, a
quarter of an epoch): the shipped checkpoints/beauty variants."""

SMOKE_RECIPE = TrainRecipe(
    name="smoke",
    stage1=StageConfig(tasks=("seqrec", "item2index", "index2item"), epochs=30, lr=3e-3, batch_size=16,
                       warmup_ratio=0.05, weight_decay=0.0),
    stage2=StageConfig(tasks=("seqrec",), epochs=10, lr=3e-3, batch_size=16, weight_decay=0.0),
    gct=GCTConfig(negatives=32),
    max_len=256, eval_users=100, eval_beams=10,
)
"""Seconds on a tiny model, for tests."""

CHECK_RECIPE = TrainRecipe(
    name="check",
    stage1=StageConfig(tasks=("seqrec", "item2index"), epochs=1, lr=2e-3, batch_size=16, max_steps=500,
                       warmup_ratio=0.05),
    stage2=StageConfig(tasks=("seqrec",), epochs=1, lr=1e-3, batch_size=16, max_steps=150, warmup_ratio=0.05),
    gct=GCTConfig(negatives=512),
    max_len=256, eval_users=200,
)
"""A bounded run of the real backbone (about half an hour on two cores): checks that the whole path
learns, not a recipe for good numbers."""

SEQREC_COMPACT_RECIPE = TrainRecipe(
    name="seqrec-compact",
    stage1=StageConfig(tasks=("seqrec",), epochs=1, lr=2e-3, batch_size=16, warmup_ratio=0.03, max_minutes=80),
    stage2=StageConfig(tasks=("seqrec",), epochs=1, lr=1e-3, batch_size=16, warmup_ratio=0.05, max_minutes=15),
    gct=GCTConfig(negatives=512),
    prompt_style="compact", max_len=128, eval_users=500, token_init="mean",
)
"""seqrec alone in the compact prompt (~2.2x fewer tokens a sample than LC-Rec's wrapper), code rows
starting at the mean row, clock budgets of 80 + 15 minutes: tuned on Scientific validation on a CPU."""

SEQREC_COMPACT_BF16_RECIPE = replace(
    SEQREC_COMPACT_RECIPE, name="seqrec-compact-bf16", cpu_bf16=True,
    stage1=replace(SEQREC_COMPACT_RECIPE.stage1, lora=_FAST_LORA),
    stage2=replace(SEQREC_COMPACT_RECIPE.stage2, lora=_FAST_LORA),
)
"""seqrec-compact with bf16 autocast on CPUs that have it and LoRA dropout 0: 1.6-2.1x its tokens/s on
an AVX512-BF16 CPU at the same validation quality (Scientific); fp32 elsewhere."""

SEQREC_COMPACT_2EP_RECIPE = replace(
    SEQREC_COMPACT_BF16_RECIPE, name="seqrec-compact-2ep",
    stage1=replace(SEQREC_COMPACT_BF16_RECIPE.stage1, epochs=2, max_minutes=None),
)
"""seqrec-compact-bf16 for two whole epochs under one cosine, chosen over one and three on Scientific
validation: the shipped checkpoints/scientific/wo_aat (113 min on a 2-core AVX512-BF16 CPU)."""

WHOLE_HISTORY_RECIPE = TrainRecipe(
    name="whole-history",
    stage1=StageConfig(tasks=("seqrec",), epochs=2, lr=2e-3, batch_size=8, warmup_ratio=0.03, lora=_FAST_LORA),
    stage2=StageConfig(tasks=("seqrec",), epochs=1, lr=1e-3, batch_size=8, warmup_ratio=0.05, lora=_FAST_LORA),
    gct=GCTConfig(negatives=512),
    prompt_style="sequence", max_len=128, eval_users=500, token_init="mean", cpu_bf16=True,
)
"""The default: seqrec written as whole user histories (every item supervised once, each from what came
before it, in one forward pass: ~5.5x fewer tokens an epoch than per-prefix samples), GCT at the
position that predicts each item, the annealing adapter in the same format."""

RECIPES = {r.name: r for r in (WHOLE_HISTORY_RECIPE, PAPER_RECIPE, SMOLLM2_RECIPE, MULTITASK_SHORT_RECIPE, MULTITASK_QUARTER_EPOCH_RECIPE,
                               SMOKE_RECIPE, CHECK_RECIPE, SEQREC_COMPACT_RECIPE, SEQREC_COMPACT_BF16_RECIPE,
                               SEQREC_COMPACT_2EP_RECIPE)}

# Names recipes had before they were named for what they are; a checkpoint that records one still loads.
RENAMED = {"gpu-lease": "multitask-short", "cpu": "check", "cpu-compact": "seqrec-compact",
           "cpu-fast": "seqrec-compact-bf16", "cpu-fast+epochs2": "seqrec-compact-2ep"}


def get_recipe(name: str) -> TrainRecipe:
    name = RENAMED.get(name, name)
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]


def with_gct(recipe: TrainRecipe, variant: Variant) -> TrainRecipe:
    return recipe if variant.use_gct else replace(recipe, gct=replace(recipe.gct, weight=0.0))
