"""int4 serving on torch's CPU int4 kernel: exact to its own rounding, close to fp32, layouts as NF4's."""

import pytest
import torch

from eager.serve.loader import choose_serving
from eager.serve.quantize import (
    INT4_LAYOUTS,
    Int4Linear,
    quantize_groups,
    quantize_int4,
    to_serving_dtype,
)
from tests.test_llm_stack import _small_llama


@pytest.mark.parametrize("groupsize", [32, 64])
def test_int4_linear_multiplies_by_its_rounded_weight(groupsize):
    torch.manual_seed(1)
    linear = torch.nn.Linear(192, 64)
    q, scale_zero = quantize_groups(linear.weight.data, groupsize)
    assert q.min() >= 0 and q.max() <= 15 and scale_zero.shape == (192 // groupsize, 64, 2)
    packed = Int4Linear(linear, groupsize)
    weight = packed.dequantized()
    # Min-max rounding: no weight moves by more than half a step of its group (plus bf16's rounding of the step).
    step = scale_zero[..., 0].t().repeat_interleave(groupsize, dim=1)
    assert ((weight - linear.weight.data).abs() <= 0.5 * step * 1.02 + 1e-3).all()
    x = torch.randn(5, 3, 192)
    expected = x.to(torch.bfloat16).float() @ weight.t() + linear.bias.data
    out = packed(x)
    assert out.shape == (5, 3, 64) and out.dtype == torch.float32
    assert (out - expected).abs().max() <= 0.02 * expected.abs().max()
    assert packed.packed.dtype != torch.float32 and packed.packed.numel() * packed.packed.element_size() <= 192 * 64 // 2


def test_int4_serving_stays_close_to_fp32_and_keeps_what_its_layout_keeps():
    model = _small_llama()
    ids = torch.randint(0, 1000, (2, 12))
    with torch.no_grad():
        reference = model(ids).logits
        quantized = to_serving_dtype(model, "int4-mlp", torch.float32)
        logits = quantized(ids).logits
    layer = quantized.model.layers[0]
    assert isinstance(layer.mlp.down_proj, Int4Linear) and type(layer.self_attn.q_proj) is torch.nn.Linear
    assert layer.mlp.down_proj.groupsize == INT4_LAYOUTS["int4-mlp"].blocksize
    assert quantized.model.embed_tokens.weight.dtype == torch.float32 and logits.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(reference.flatten(), logits.flatten(), dim=0) > 0.95
    everything = quantize_int4(_small_llama(), torch.float32, groupsize=64)
    assert all(isinstance(m, Int4Linear) for n, m in everything.named_modules() if n.endswith(("q_proj", "up_proj")))
    assert type(everything.lm_head) is torch.nn.Linear  # the tied vocabulary head stays


def test_int4_is_a_cpu_path_asked_for_by_name():
    assert choose_serving("int4-mlp", "cpu").dtype == "int4-mlp" and choose_serving("auto", "cpu").dtype == "nf4-mlp"
    with pytest.raises(ValueError, match="CPU int4 kernel; on CUDA serve nf4"):
        choose_serving("int4", "cuda")

