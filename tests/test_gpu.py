"""Checks that need a CUDA GPU (skipped elsewhere): the varlen flash kernel against the plain
PyTorch reference, and a packed training step that never waits on the host."""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("kv_heads", [3, 9])
def test_varlen_flash_matches_the_masked_sdpa_reference(kv_heads):
    from eager.train.attention import (
        segment_bounds,
        varlen_attention_forward,
        varlen_reference,
    )

    torch.manual_seed(0)
    rows, length, heads, dim = 3, 256, 9, 64
    positions = torch.cat([torch.arange(n) for n in (100, 60, 96, 256, 17, 200, 39)]).view(rows, length)
    bounds, longest = segment_bounds(positions)
    q = torch.randn(rows, heads, length, dim, device="cuda", requires_grad=True)
    k = torch.randn(rows, kv_heads, length, dim, device="cuda", requires_grad=True)
    v = torch.randn(rows, kv_heads, length, dim, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fast, _ = varlen_attention_forward(None, q, k, v, None, scaling=dim**-0.5, cu_seq_lens_q=bounds.cuda(),
                                           max_length_q=longest)
    slow = varlen_reference(q, k, v, bounds.cuda(), dim**-0.5)
    assert fast.shape == slow.shape == (rows, length, heads, dim)
    def relative_error(a, b):  # bf16 kernel against fp32 reference: ~1e-3 when right, ~1 when a mask is wrong
        return float((a.float() - b).norm() / b.norm())

    assert relative_error(fast, slow) < 2e-2
    grads_fast = torch.autograd.grad(fast.float().square().sum(), (q, k, v))
    grads_slow = torch.autograd.grad(slow.square().sum(), (q, k, v))
    for a, b in zip(grads_fast, grads_slow):
        assert relative_error(a, b) < 3e-2


def test_packed_training_step_never_syncs(cyclic_data, base_dir):
    """Forward, loss (LM + GCT), backward and a fused AdamW step queue on the GPU without one host sync."""
    from eager.model.code_tokens import add_code_tokens
    from eager.train.attention import TrainingAttention
    from eager.train.batching import collate_packed
    from eager.train.gct import DecompressionProjectors, GCTConfig
    from eager.train.objective import compute_loss
    from eager.train.samples import build_samples
    from tests.tiny import load_tiny, toy_embeddings, toy_index

    model, tok = load_tiny(base_dir)
    index = toy_index(cyclic_data)
    add_code_tokens(model, tok, index, "mean", cyclic_data)
    model.cuda()
    projectors = DecompressionProjectors(model.config.hidden_size, toy_embeddings(cyclic_data)).cuda()
    samples = build_samples(cyclic_data, index, ("seqrec", "index2item"))[:32]
    batch = collate_packed(tok, samples, 256, 512).pin_memory()
    params = [p for p in (*model.parameters(), *projectors.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    generator = torch.Generator().manual_seed(0)
    with TrainingAttention(model, "varlen"), torch.autocast("cuda", dtype=torch.bfloat16):
        compute_loss(model, batch.to("cuda", non_blocking=True), projectors, GCTConfig(negatives=16), generator)
        torch.cuda.synchronize()  # the first step may sync (lazy initialisation); the next must not
        torch.cuda.set_sync_debug_mode("error")
        try:
            losses = compute_loss(model, batch.to("cuda", non_blocking=True), projectors, GCTConfig(negatives=16),
                                  generator)
            losses["loss"].backward()
            optimizer.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(losses["loss"]).item() and {"lm", "semantic", "behaviour"} <= set(losses)
