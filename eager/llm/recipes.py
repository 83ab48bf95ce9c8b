"""Named training recipes and the paper's variants, as importable constants."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from eager.data.split import DEFAULT_MAX_HISTORY
from eager.llm.gct import GCTConfig
from eager.llm.tasks import DEFAULT_PROMPT_STYLE


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 32
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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


def history_window(max_history: int) -> int:
    """How many of a history's last items a model trained with the history cap ``max_history`` reads:
    its cap, within the protocol's 20 (evaluation never gives a model more)."""
    return min(max_history, DEFAULT_MAX_HISTORY)


def recorded_history_window(config: dict) -> int:
    """The history window of the model a checkpoint's ``config.json`` describes."""
    return history_window(config.get("recipe", {}).get("max_history", DEFAULT_MAX_HISTORY))


@dataclass(frozen=True)
class TrainRecipe:
    name: str
    stage1: StageConfig
    stage2: StageConfig
    gct: GCTConfig = field(default_factory=GCTConfig)
    token_init: str = "text"  # eager.llm.code_tokens.TOKEN_INITS: "text", "mean" or "mean+text"
    max_len: int = 384
    pack_len: int | None = None  # pack each batch's samples into rows of this many tokens (None: pad)
    # The history a model trains on and reads. Training samples hold at most this many items, and at
    # inference (model selection, `eager eval`, `eager recommend`, the demo) the model reads the last
    # `history_window` = min(max_history, 20) items of what it is given. The protocol gives every
    # model the last 20 (eager.data.split.DEFAULT_MAX_HISTORY); a lower cap is the model's own choice
    # to read fewer, as a SASRec's max_len is. Read at the 20 it never trained on, a 5-item model
    # trails; read at its 5 it ties the 20-item one (Scientific, docs/levers.md, lever 8).
    max_history: int = 20
    prompt_style: str = DEFAULT_PROMPT_STYLE  # or "compact" (eager.llm.tasks.PROMPT_STYLES): ~2.2x fewer tokens a sample
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
    # with a warning). Measured on a 2-core AVX512-BF16 EPYC: docs/levers.md, "Training faster on a CPU".
    cpu_bf16: bool = False
    compile: bool = False  # torch.compile the decoder layers for the training steps (see CompiledLayers)
    # Attention of the packed training steps: "sdpa" (transformers' block-diagonal mask over whole rows)
    # or "varlen" (each sample attends over its own length only: eager.llm.attention). Needs pack_len.
    attention: str = "sdpa"
    # Recompute decoder layers' activations in the backward pass instead of keeping them
    # (transformers' activation checkpointing) in every n-th layer: 0 none, 1 every layer, 2 every
    # other one, ... The same losses and gradients for a second forward pass through those layers,
    # and a step no longer keeps ~1 MiB a token in them. What lets a recipe sized on an H200
    # (gpu-lease: 256-sample batches, up to ~100k tokens) train on an 80 GB H100: with every layer,
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
        from eager.llm.attention import ATTENTION_CHOICES

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


# The authors' LLaMA-7B recipe, for reference: full fine-tuning cannot meet the 12 MiB checkpoint
# limit, so `eager train` refuses to export it.
PAPER_RECIPE = TrainRecipe(
    name="paper",
    stage1=StageConfig(tasks=("seqrec", "item2index", "index2item", "fusionseqrec"), epochs=3, lr=5e-5,
                       full_finetune=True, batch_size=128),
    stage2=StageConfig(tasks=("seqrec",), epochs=1, lr=5e-5, batch_size=128),
)

# Our starting point for SmolLM2-135M: LoRA + new rows in both stages, a larger learning rate
# (a 135M model with LoRA moves far less per step than a fully tuned 7B) and more epochs.
# Not yet tuned on validation: that needs the GPU runs of issue #5. LoRA r=8 in both stages keeps
# a checkpoint near 10.5 MiB (r=16 in stage 1 would break the 12 MiB limit). Batches of up to 32k
# tokens (about the gpu-lease recipe's median batch, without its 100k-token tails) and LoRA dropout 0
# (an identity branch fuses away): the setup whose stage 1 the trainer ran at 206k tokens/s on an H200
# with 256-sample batches, and at ~313k with 64k-token ones after its step stopped waiting on the host.
# 32k stays until validation shows that half as many optimizer steps an epoch learn as well.
_FAST_LORA = LoraSettings(dropout=0.0)
SMOLLM2_RECIPE = TrainRecipe(
    name="smollm2",
    stage1=StageConfig(tasks=("seqrec", "item2index", "index2item", "fusionseqrec"), epochs=8, lr=1e-3,
                       batch_size=512, batch_tokens=32_768, lora=_FAST_LORA),
    stage2=StageConfig(tasks=("seqrec",), epochs=1, lr=5e-4, batch_size=512, batch_tokens=32_768, lora=_FAST_LORA),
    pack_len=2048,
    # Compiled decoder layers + varlen attention: 3.2x the plain LoRA step on an H200 with dropout 0
    # (scripts/bench_train_step.py --suite, README), for ~65 s of compiling per stage, which hours of
    # training repay.
    compile=True, attention="varlen",
    # Code tokens start at the mean row: on Scientific (CPU, 1,000 steps, the same 500 validation
    # users) starting them from their items' titles fell to R@10 0.026 against 0.094, and its GCT
    # losses stalled near 6.0 against 3.5 (docs/levers.md, lever 1); the mean row plus the titles'
    # differences ("mean+text") tied the mean row on two seeds (R@10 +0.003 [-0.008, +0.014]), so the
    # simpler start stays. Measured with seqrec alone: the GPU trials init-mean / init-mean-text ask
    # it again with the alignment tasks.
    token_init="mean",
)

# One short GPU lease (about 15 minutes of an H100/H200, start-up and evaluation included): some
# 4.5 minutes of training, each stage's step count fitted to its clock budget. Not compiled: ~70 s
# of compiling per stage would eat most of what the 1.78x faster steps gain in a 1–3 minute stage. Batches of 256
# samples (~30k tokens, packed) keep the GPU busy between optimizer steps. Not tuned: the first
# numbers on a GPU, the point to tune from.
GPU_LEASE_RECIPE = TrainRecipe(
    name="gpu-lease",
    stage1=StageConfig(tasks=("seqrec", "item2index", "index2item", "fusionseqrec"), epochs=1, lr=1e-3,
                       batch_size=256, warmup_ratio=0.03, max_minutes=3.25),
    stage2=StageConfig(tasks=("seqrec",), epochs=1, lr=5e-4, batch_size=256, warmup_ratio=0.03, max_minutes=1.1),
    pack_len=2048, eval_users=1000,
)

# Seconds on a tiny model, for tests; a few hundred steps on the real backbone for CPU checks.
SMOKE_RECIPE = TrainRecipe(
    name="smoke",
    stage1=StageConfig(tasks=("seqrec", "item2index", "index2item"), epochs=30, lr=3e-3, batch_size=16,
                       warmup_ratio=0.05, weight_decay=0.0),
    stage2=StageConfig(tasks=("seqrec",), epochs=10, lr=3e-3, batch_size=16, weight_decay=0.0),
    gct=GCTConfig(negatives=32),
    max_len=256, eval_users=100, eval_beams=10,
)

# A bounded run of the real backbone on two CPU cores (about half an hour on a small dataset):
# the check that the whole path learns something real, not a recipe for good numbers.
CPU_RECIPE = TrainRecipe(
    name="cpu",
    stage1=StageConfig(tasks=("seqrec", "item2index"), epochs=1, lr=2e-3, batch_size=16, max_steps=500,
                       warmup_ratio=0.05),
    stage2=StageConfig(tasks=("seqrec",), epochs=1, lr=1e-3, batch_size=16, max_steps=150, warmup_ratio=0.05),
    gct=GCTConfig(negatives=512),
    max_len=256, eval_users=200,
)

# What two CPU cores can train in under two hours that still learns the task: seqrec only, in the
# compact prompt style (~33 tokens a sample on Scientific against ~75 with LC-Rec's wrapper, and the
# CPU is bound by tokens), each stage's step count fitted to its clock budget. Code tokens start at
# the mean row: on Scientific, 35 minutes of stage 1 reached validation R@10 0.086 that way against
# 0.018 when they start from the titles under each code (the same 500 users; popularity 0.020; README).
CPU_COMPACT_RECIPE = TrainRecipe(
    name="cpu-compact",
    stage1=StageConfig(tasks=("seqrec",), epochs=1, lr=2e-3, batch_size=16, warmup_ratio=0.03, max_minutes=80),
    stage2=StageConfig(tasks=("seqrec",), epochs=1, lr=1e-3, batch_size=16, warmup_ratio=0.05, max_minutes=15),
    gct=GCTConfig(negatives=512),
    prompt_style="compact", max_len=128, eval_users=500, token_init="mean",
)

# cpu-compact at about twice the speed on a CPU with native bf16 (AVX512-BF16 or AMX): bf16 autocast in
# the training steps and LoRA dropout 0 (drawing dropout masks was ~14 % of a CPU step). On Scientific,
# 1.6-2.1x cpu-compact's tokens/s in the same search; 1,000 steps in 40 min gave the same 47 validation
# hits out of 500 as the shipped cpu-compact run and NDCG@10 +0.0044 [-0.0024, +0.0119] (one seed;
# docs/levers.md, "Training faster on a CPU"). Elsewhere it trains in fp32 and keeps the dropout gain.
# Its whole 80-minute budget holds one epoch there (2,097 steps, ~60 min): test R@10 0.0813 and 0.0826 on
# two seeds, +0.0117 over cpu-compact's 1,000 steps averaged per user (docs/levers.md, "Two seeds of the
# epoch"). Two epochs with one cosine over both (the search trial `stage1.epochs=2,stage1.max_minutes=None`,
# ~113 min) went further on two seeds and ship as checkpoints/scientific/wo_aat (docs/levers.md, "The second
# epoch's second seed, and the swap"); the recipe keeps its one-epoch budget, which the 80-minute runs reproduce.
# cpu-compact stays as it was, so the 1,000-step checkpoint it trained (in git history; README, Demo) reproduces.
CPU_FAST_RECIPE = replace(
    CPU_COMPACT_RECIPE, name="cpu-fast", cpu_bf16=True,
    stage1=replace(CPU_COMPACT_RECIPE.stage1, lora=_FAST_LORA),
    stage2=replace(CPU_COMPACT_RECIPE.stage2, lora=_FAST_LORA),
)

RECIPES = {r.name: r for r in (PAPER_RECIPE, SMOLLM2_RECIPE, GPU_LEASE_RECIPE, SMOKE_RECIPE, CPU_RECIPE,
                               CPU_COMPACT_RECIPE, CPU_FAST_RECIPE)}


@dataclass(frozen=True)
class Variant:
    name: str
    index_source: str  # "dual" or "semantic"
    use_gct: bool
    use_aat: bool


VARIANTS = {
    v.name: v
    for v in (
        Variant("full", "dual", True, True),
        Variant("wo_dki", "semantic", True, True),
        Variant("wo_gct", "dual", False, True),
        Variant("wo_aat", "dual", True, False),
    )
}


def get_recipe(name: str) -> TrainRecipe:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise KeyError(f"unknown variant {name!r}; choose one of: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def with_gct(recipe: TrainRecipe, variant: Variant) -> TrainRecipe:
    return recipe if variant.use_gct else replace(recipe, gct=replace(recipe.gct, weight=0.0))
