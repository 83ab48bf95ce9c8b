"""The training stack on a tiny random Llama with the real tokenizer and a 50-item catalogue."""

import json
import math
import re
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM

from eager.decoding.evaluate import evaluate_checkpoint, recommend_keys
from eager.decoding.hf_generate import recommend_batch
from eager.decoding.trie import CodeTrie
from eager.model.checkpoint import CheckpointError
from eager.model.code_tokens import add_code_tokens
from eager.model.variants import get_variant
from eager.serve.loader import load_checkpoint
from eager.train import trainer as train_module
from eager.train.batching import IGNORE, collate
from eager.train.gct import DecompressionProjectors, GCTConfig
from eager.train.objective import compute_loss
from eager.train.pipeline import train_variant
from eager.train.recipes import get_recipe
from eager.train.samples import build_samples
from eager.train.trainer import train_stage
from tests.tiny import TEST_RECIPE, load_tiny, toy_embeddings, toy_index

_tiny, _embeddings, _index = load_tiny, toy_embeddings, toy_index


def test_code_tokens_are_atomic_and_labels_cover_the_response(cyclic_data, base_dir):
    model, tok = _tiny(base_dir)
    index = _index(cyclic_data)
    vocab = add_code_tokens(model, tok, index, "text", cyclic_data)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    code = index.text_of("I005")
    assert tok(code, add_special_tokens=False)["input_ids"] == vocab.ids_for(index.code_of("I005")).tolist()
    samples = build_samples(cyclic_data, index, ("seqrec", "index2item"))
    assert {s.task for s in samples} == {"seqrec", "index2item"}
    # Every prefix of every train sequence is a seqrec sample (8 items → 6 train → 5 samples per user).
    assert sum(s.task == "seqrec" for s in samples) == 5 * cyclic_data.num_users
    batch = collate(tok, samples[:4], 256)
    for row, s in enumerate(samples[:4]):
        labelled = batch.labels[row][batch.labels[row] != IGNORE].tolist()
        assert labelled == tok(s.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    # one GCT point per seqrec sample, at the EOS closing its response
    seqrec_rows = [row for row, s in enumerate(samples[:4]) if s.task == "seqrec"]
    assert batch.summary_row.tolist() == seqrec_rows
    for row, position in zip(batch.summary_row.tolist(), batch.summary_index.tolist()):
        assert batch.input_ids[row, position] == tok.eos_token_id


def test_code_token_inits_start_where_they_say(cyclic_data, base_dir):
    index = _index(cyclic_data)
    rows = {}
    for init in ("mean", "text", "mean+text"):
        model, tok = _tiny(base_dir)
        words = model.get_input_embeddings().weight.detach().clone()
        vocab = add_code_tokens(model, tok, index, init, cyclic_data)
        rows[init] = model.get_input_embeddings().weight.detach()[vocab.table]  # (levels, k, hidden)
    mean_row = words.mean(0)
    assert torch.allclose(rows["mean"], mean_row.expand_as(rows["mean"]))
    # "text": a code's row is the mean word vector of the titles of the items under it.
    level, value = 1, int(index.codes[0, 1])
    members = np.flatnonzero(index.codes[:, level] == value)
    titles = dict(zip(cyclic_data.item_keys, cyclic_data.titles))
    item_vectors = [words[tok(titles[index.keys[m]], add_special_tokens=False)["input_ids"]].mean(0) for m in members]
    assert torch.allclose(rows["text"][level, value], torch.stack(item_vectors).mean(0), atol=1e-6)
    # "mean+text": centred on the mean row, with the same differences between codes as "text".
    assert torch.allclose(rows["mean+text"].mean(1), mean_row.expand(index.levels, -1), atol=1e-6)
    assert torch.allclose(rows["mean+text"] - rows["mean+text"][:, :1], rows["text"] - rows["text"][:, :1], atol=1e-6)
    assert not torch.allclose(rows["text"][:, 0], rows["text"][:, 1])
    with pytest.raises(ValueError, match="unknown token init 'titles'.*mean\\+text"):
        add_code_tokens(*_tiny(base_dir), index, "titles", cyclic_data)


def test_gct_gradients_reach_projectors_and_model(cyclic_data, base_dir):
    model, tok = _tiny(base_dir)
    index = _index(cyclic_data)
    add_code_tokens(model, tok, index, "mean", cyclic_data)
    projectors = DecompressionProjectors(32, _embeddings(cyclic_data))
    samples = [s for s in build_samples(cyclic_data, index, ("seqrec",))][:8]
    out = compute_loss(model, collate(tok, samples, 256), projectors, GCTConfig(negatives=16))
    assert set(out) == {"loss", "lm", "semantic", "behaviour"}
    (out["semantic"] + out["behaviour"]).backward()
    assert projectors.heads["semantic"].weight.grad.abs().sum() > 0
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_trie_allows_only_real_codes(cyclic_data, base_dir):
    model, tok = _tiny(base_dir)
    index = _index(cyclic_data)
    vocab = add_code_tokens(model, tok, index, "mean", cyclic_data)
    trie = CodeTrie(index, vocab)
    # Every non-final node has a non-empty allowed set (by construction of the trie).
    for node in range(len(trie.next_node)):
        if trie.depth_of[node] < index.levels:
            assert len(trie.allowed_values(node)) > 0
    first = index.code_of("I000")
    ids = vocab.ids_for(first).tolist()
    assert ids[1] in trie.allowed_token_ids(ids[:1])
    assert trie.allowed_token_ids(ids) == []
    recs = recommend_batch(model, tok, index, trie, [["I001", "I002"], ["I010"]], k=5, beams=8)
    assert all(len(r) == 5 for r in recs)
    assert all(r.key in index.keys for rec in recs for r in rec)
    assert all(a.score >= b.score for rec in recs for a, b in zip(rec, rec[1:]))


def test_stage_trains_only_lora_and_code_rows(cyclic_data, base_dir, tmp_path):
    model, tok = _tiny(base_dir)
    index = _index(cyclic_data)
    vocab = add_code_tokens(model, tok, index, "text", cyclic_data)
    trie = CodeTrie(index, vocab)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    first = int(vocab.all_ids().min())
    samples = build_samples(cyclic_data, index, ("seqrec",))
    stage = replace(TEST_RECIPE.stage2, max_steps=3)
    trained, lora, rows, info = train_stage("stage2", model, tok, index, trie, cyclic_data, samples, stage,
                                            TEST_RECIPE, None, tmp_path, lambda r: None, progress=False)
    assert lora and all("lora_" in k for k in lora)
    emb = trained.get_input_embeddings().weight
    assert torch.equal(emb[:first], before["model.embed_tokens.weight"][:first])  # base vocabulary untouched
    assert not torch.equal(emb[first:], before["model.embed_tokens.weight"][first:])  # code rows learned
    checked = 0
    for name, value in trained.named_parameters():
        if "lora_" in name or "embed_tokens" in name:
            continue
        original = name.replace("base_model.model.", "", 1).replace(".base_layer", "")
        assert torch.equal(value, before[original]), f"{original} changed in stage 2"
        checked += 1
    assert checked == len(before) - 1  # every base weight but the (tied) embedding was compared


def test_a_long_epoch_logs_its_progress_before_it_ends(cyclic_data, base_dir, tmp_path, monkeypatch):
    """Without bars (--json) the run's log still shows steps and running losses during an epoch."""
    monkeypatch.setattr(train_module, "PROGRESS_EVERY_S", 0.0)  # a line after every step
    model, tok = _tiny(base_dir)
    index = _index(cyclic_data)
    trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", cyclic_data))
    samples = build_samples(cyclic_data, index, ("seqrec",))
    records = []
    train_stage("stage2", model, tok, index, trie, cyclic_data, samples, replace(TEST_RECIPE.stage2, max_steps=5),
                TEST_RECIPE, None, tmp_path, records.append, progress=False)
    during = [r for r in records if r.get("in_epoch")]
    assert [r["step"] for r in during] == [1, 2, 3, 4, 5]
    assert all(r["planned_steps"] == 5 and r["tokens_per_s"] > 0 and math.isfinite(r["loss_lm"]) for r in during)
    # The steady rate (past the first steps' start-up) appears once there are steps to time after them.
    assert [("tokens_per_s_steady" in r) for r in during] == [False, False, False, True, True]
    assert all(r["tokens_per_s_steady"] > 0 for r in during[3:])
    assert "valid_ndcg@10" in records[-1] and not records[-1].get("in_epoch")  # the epoch's own record comes last


@pytest.mark.parametrize("cpu_bf16", [False, True])
def test_cpu_bf16_autocasts_the_training_steps_only(cyclic_data, base_dir, tmp_path, monkeypatch, cpu_bf16):
    """cpu_bf16 runs a CPU's training steps in bf16 autocast; validation and the trained weights stay fp32."""
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: True)  # whatever this CPU has
    model, tok = _tiny(base_dir)
    index = _index(cyclic_data)
    trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", cyclic_data))
    samples = build_samples(cyclic_data, index, ("seqrec",))
    seen = []  # (training?, dtype of the first decoder layer's MLP output)
    model.model.layers[0].mlp.register_forward_hook(lambda m, i, out: seen.append((m.training, out.dtype)))
    recipe = replace(TEST_RECIPE, cpu_bf16=cpu_bf16)
    records = []
    trained, _, rows, _ = train_stage("stage2", model, tok, index, trie, cyclic_data, samples,
                                      replace(TEST_RECIPE.stage2, max_steps=4), recipe, None, tmp_path,
                                      records.append, progress=False)
    in_training = {dtype for training, dtype in seen if training}
    in_validation = {dtype for training, dtype in seen if not training}
    assert in_training == {torch.bfloat16 if cpu_bf16 else torch.float32}
    assert in_validation == {torch.float32}  # model selection scores in fp32 either way
    assert all(p.dtype == torch.float32 for p in trained.parameters()) and rows.dtype == torch.float32
    assert math.isfinite(records[-1]["loss_lm"]) and "valid_ndcg@10" in records[-1]


def test_cpu_bf16_falls_back_to_fp32_where_the_cpu_has_no_bf16_matmul(monkeypatch):
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16 matmul"):
        assert train_module.training_precision(replace(TEST_RECIPE, cpu_bf16=True), cuda=False) == "no"
    assert train_module.training_precision(TEST_RECIPE, cuda=False) == "no"
    # On CUDA the recipe's bf16 decides, and cpu_bf16 does not enter into it.
    assert train_module.training_precision(replace(TEST_RECIPE, cpu_bf16=True, bf16=False), cuda=True) == "no"
    assert train_module.training_precision(TEST_RECIPE, cuda=True) == "bf16"


def test_cpu_fast_is_cpu_compact_in_bf16_without_lora_dropout():
    compact, fast = asdict(get_recipe("seqrec-compact")), asdict(get_recipe("seqrec-compact-bf16"))
    differ = {k for k in compact if compact[k] != fast[k] and k not in ("stage1", "stage2")}
    assert differ == {"name", "cpu_bf16"} and fast["cpu_bf16"] and not compact["cpu_bf16"]
    for stage in ("stage1", "stage2"):
        a, b = compact[stage], fast[stage]
        assert {k for k in a if a[k] != b[k]} == {"lora"} and b["lora"]["dropout"] == 0.0
        assert {k for k in a["lora"] if a["lora"][k] != b["lora"][k]} == {"dropout"}


def test_train_export_load_and_evaluate(cyclic_data, base_dir, tmp_path):
    model, tok = _tiny(base_dir)
    out = tmp_path / "ckpt"
    result = train_variant(cyclic_data, get_variant("full"), TEST_RECIPE, out, tmp_path / "artifacts",
                           base=str(base_dir), progress=False,
                           model=model, tokenizer=tok, index=_index(cyclic_data), tables=_embeddings(cyclic_data))
    files = {p.name for p in out.iterdir()}
    assert {"stage1.safetensors", "stage2.safetensors", "index.json", "config.json", "metrics.json", "manifest.json"} <= files
    assert sum(p.stat().st_size for p in out.iterdir()) < 12 * 2**20
    history = json.loads((out / "metrics.json").read_text())["history"]
    s1 = [h["loss_lm"] for h in history if h["stage"] == "stage1"]
    assert len(s1) == 2 and s1[-1] < s1[0]  # the loss falls
    assert {"loss_semantic", "loss_behaviour"} <= set(history[0])
    assert result["selection"]["users"] == 12
    # The checkpoint and the run's log say where it trained (its tokens/s mean little without the machine).
    from eager.utils import machine_line

    trained_on = json.loads((out / "config.json").read_text())["trained_on"]
    assert trained_on["machine"] == machine_line() and trained_on["processes"] == 1
    assert trained_on["started"] <= trained_on["finished"]
    log = [json.loads(line) for line in (tmp_path / "artifacts" / "cyclic" / "train" / f"full-{TEST_RECIPE.name}" /
                                         "train_log.jsonl").read_text().splitlines()]
    assert log[0] == {"run": "full", "recipe": TEST_RECIPE.name, "out": str(out), "machine": machine_line(),
                      "processes": 1, "started": trained_on["started"]}

    loaded = load_checkpoint(out)
    report = evaluate_checkpoint(loaded, cyclic_data, "test", limit=16, beams=10, k=10)
    assert report["invalid_rate"] == 0 and report["users"] == 16 and report["missing_users"] == 0
    recs = recommend_keys(loaded, cyclic_data, ["I001", "I002", "I003"], k=5)
    assert len(recs) == 5 and all(r.key in cyclic_data.key_to_index() for r in recs)
    with pytest.raises(KeyError, match="nope"):
        recommend_keys(loaded, cyclic_data, ["I001", "nope"], k=5)
    with pytest.raises(ValueError, match="empty"):
        recommend_keys(loaded, cyclic_data, [], k=5)

    # The exported weights are bf16: a reload reproduces the loaded model's logits exactly.
    again = load_checkpoint(out)
    ids = tok(loaded.index.text_of("I004"), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids).logits, again.model(ids).logits, atol=1e-5)
    (out / "stage1.safetensors").write_bytes(b"corrupt")
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(out)


def _small_llama() -> LlamaForCausalLM:
    """A seeded 2-layer random Llama (hidden 128, MLP 256, vocabulary 1,000) in eval mode, for the NF4 tests."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def test_nf4_quantisation_runs_on_cpu_and_stays_close():
    import bitsandbytes as bnb

    from eager.serve.quantize import quantize_nf4

    model = _small_llama()
    ids = torch.randint(0, 1000, (1, 12))
    with torch.no_grad():
        reference = model(ids).logits
        quantized = quantize_nf4(model)
        logits = quantized(ids).logits
    proj = quantized.model.layers[0].self_attn.q_proj
    assert isinstance(proj, bnb.nn.Linear4bit) and proj.weight.dtype == torch.uint8  # packed 4-bit
    assert torch.nn.functional.cosine_similarity(reference.flatten(), logits.flatten(), dim=0) > 0.95


def test_nf4_leaves_linears_that_do_not_fit_its_blocks_unquantised_and_still_runs(caplog):
    """A Linear whose inputs are not a whole number of blocks stays as it is (bitsandbytes' AVX512-BF16
    CPU kernel would fail on it at the first matmul) and the model still runs, on any CPU."""
    import bitsandbytes as bnb

    from eager.serve.quantize import fits_4bit_kernel, quantize_nf4

    model = _small_llama()
    ids = torch.randint(0, 1000, (1, 12))
    with torch.no_grad():
        reference = model(ids).logits
        with caplog.at_level("WARNING", logger="eager.serve"):
            quantized = quantize_nf4(model, torch.float32, blocksize=256).eval()  # only down_proj has 256 inputs
        logits = quantized(ids).logits  # eval mode, as served: the mode that takes the AVX512-BF16 kernel
    for layer in quantized.model.layers:
        assert isinstance(layer.mlp.down_proj, bnb.nn.Linear4bit)
        for kept in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.mlp.up_proj):
            assert type(kept) is torch.nn.Linear and not fits_4bit_kernel(kept, 256)
    assert "12 Linear(s) stay unquantised" in caplog.text and "layers.0.self_attn.q_proj (128→128)" in caplog.text
    assert torch.nn.functional.cosine_similarity(reference.flatten(), logits.flatten(), dim=0) > 0.95
    assert not fits_4bit_kernel(torch.nn.Linear(64, 48), 64)  # 48 rows: not whole tiles of 32


def test_nf4_runs_everything_else_in_the_compute_dtype_and_keeps_what_it_is_told():
    """A bf16-stored model served with fp32 compute: embeddings, norms, head and kept Linears in fp32."""
    import bitsandbytes as bnb

    from eager.serve.quantize import quantize_nf4

    model = torch.nn.Module.to(_small_llama(), torch.bfloat16)
    quantized = quantize_nf4(model, torch.float32, blocksize=32, keep=("layers.1.mlp.",))
    layers = quantized.model.layers
    assert quantized.model.embed_tokens.weight.dtype == torch.float32
    assert quantized.model.norm.weight.dtype == torch.float32 and layers[0].input_layernorm.weight.dtype == torch.float32
    kept = layers[1].mlp.down_proj
    assert type(kept) is torch.nn.Linear and kept.weight.dtype == torch.float32
    assert isinstance(layers[1].self_attn.q_proj, bnb.nn.Linear4bit)
    assert isinstance(layers[0].mlp.down_proj, bnb.nn.Linear4bit)
    assert layers[0].mlp.down_proj.weight.quant_state.blocksize == 32
    with torch.no_grad():
        assert quantized(torch.randint(0, 1000, (1, 6))).logits.dtype == torch.float32


def test_cli_eval_and_recommend_a_checkpoint(cyclic_data, base_dir, tmp_path, capsys):
    """`eager eval --checkpoint` and `eager recommend` on a checkpoint of a dataset found by name."""
    from eager.cli import main
    from eager.data import load_dataset

    root = tmp_path / "data"
    cyclic_data.save(root / "ml-100k")  # any registered name; the canonical form is read from there
    data = load_dataset("ml-100k", root)
    model, tok = _tiny(base_dir)
    ckpt = tmp_path / "ckpt"
    train_variant(data, get_variant("wo_aat"), replace(TEST_RECIPE, stage1=replace(TEST_RECIPE.stage1, max_steps=4)),
                  ckpt, tmp_path / "artifacts", base=str(base_dir), progress=False, model=model, tokenizer=tok,
                  index=_index(data), tables=_embeddings(data))
    assert not (ckpt / "stage2.safetensors").exists()  # w/o AAT: stage 1 only, rows included

    common = ["--checkpoint", str(ckpt), "--base", str(base_dir), "--data-root", str(root), "--json"]
    assert main(["recommend", "--history", "I001,I002", "--k", "5", "--beams", "8", *common]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["recommendations"]) == 5 and all(r["title"].startswith("item number") for r in out["recommendations"])
    assert main(["recommend", "--history", "I001,I002", "--k", "20", "--beams", "20", "--exclude-history", *common]) == 0
    fresh = [r["key"] for r in json.loads(capsys.readouterr().out)["recommendations"]]
    assert len(fresh) == 20 and not {"I001", "I002"} & set(fresh)
    assert main(["recommend", "--history", "I001,bogus", *common]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["eval", "--split", "valid", "--limit", "8", "--beams", "10", "--out", str(tmp_path / "ev"), *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["users"] == 8 and report["invalid_rate"] == 0
    assert (tmp_path / "ev" / "predictions.jsonl").exists()
    # A partial run's popularity is read from the whole train split, not from its 8 users'.
    from eager.data.split import train_item_counts

    counts, index = train_item_counts(data), data.key_to_index()
    listed = [index[key] for line in (tmp_path / "ev" / "predictions.jsonl").open() for key in json.loads(line)["ranked"][:10]]
    assert report["median_popularity@10"] == np.median(counts[listed])
    # --exact: the exact top-10 of the 50 items, the beam widened per user as far as it had to go.
    assert main(["eval", "--split", "valid", "--limit", "8", "--exact", "--out", str(tmp_path / "exact"), *common]) == 0
    exact = json.loads(capsys.readouterr().out)
    assert exact["users"] == 8 and sum(exact["beams_needed"]["users_per_width"].values()) == 8
    written = json.loads((tmp_path / "exact" / "metrics.json").read_text())
    assert written["search"] == "exact" and written["beams_needed"] == exact["beams_needed"] and written["k"] == [5, 10]
    exact_lists = [json.loads(line)["ranked"] for line in (tmp_path / "exact" / "predictions.jsonl").open()]
    assert all(len(ranked) == 10 for ranked in exact_lists)
    # Beside them, the plain 20-beam lists of the same users: what `eager eval` alone ranks first.
    assert main(["eval", "--split", "valid", "--limit", "8", "--out", str(tmp_path / "ev20"), *common]) == 0
    capsys.readouterr()
    plain = json.loads((tmp_path / "ev20" / "metrics.json").read_text())
    assert exact["beam"]["recall@10"] == plain["recall@10"] and exact["beam"]["ndcg@5"] == plain["ndcg@5"]
    beam_lists = [json.loads(line)["ranked"] for line in (tmp_path / "exact" / "beam" / "predictions.jsonl").open()]
    plain_lists = [json.loads(line)["ranked"] for line in (tmp_path / "ev20" / "predictions.jsonl").open()]
    assert beam_lists == [ranked[:10] for ranked in plain_lists]
    shared = sum(len(set(a) & set(b)) for a, b in zip(beam_lists, exact_lists)) / 80
    assert exact["agreement_with_beam"]["overlap@10"] == pytest.approx(shared) and exact["agreement_with_beam"]["users"] == 8
    # --max-history 2: the same users and held-out items, prompts of their last two items only.
    assert main(["eval", "--split", "valid", "--limit", "8", "--max-history", "2", "--out", str(tmp_path / "h2"), *common]) == 0
    short = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "h2" / "metrics.json").read_text())
    assert short["max_history"] == written["max_history"] == 2 and written["model_history_window"] == TEST_RECIPE.max_history
    from eager.data.split import eval_cases
    from eager.decoding.engine import BeamSearchEngine

    cases = eval_cases(data, "valid", 2)[:8]
    assert all(len(c.history) == 2 for c in cases) and max(len(c.history) for c in eval_cases(data, "valid")[:8]) > 2
    engine = BeamSearchEngine.from_loaded(load_checkpoint(ckpt, base=str(base_dir)))
    found = engine.search([[data.item_keys[i] for i in c.history] for c in cases], k=20, beams=20).recommendations
    lists = {json.loads(line)["user"]: json.loads(line)["ranked"] for line in (tmp_path / "h2" / "predictions.jsonl").open()}
    assert lists == {data.user_keys[c.user]: [r.key for r in rec] for c, rec in zip(cases, found)}
    # A model reads the history it trained on: with a cap of 2 in its recipe, selection, evaluation
    # and recommendation all read each user's last 2 items (the same lists as --max-history 2 above).
    from eager.train.validation import selection_cases

    assert max(len(c.history) for c in selection_cases(data, replace(TEST_RECIPE, max_history=2))) == 2
    assert max(len(c.history) for c in selection_cases(data, TEST_RECIPE)) > 2
    capped = load_checkpoint(ckpt, base=str(base_dir))
    capped.config["recipe"]["max_history"] = 2
    own = evaluate_checkpoint(capped, data, "valid", limit=8, out_dir=tmp_path / "own")
    assert own["max_history"] == 2 and "model_history_window" not in own
    assert {json.loads(line)["user"]: json.loads(line)["ranked"] for line in (tmp_path / "own" / "predictions.jsonl").open()} == lists
    read20 = evaluate_checkpoint(capped, data, "valid", limit=8, beams=10, k=10, max_history=20)
    assert read20["max_history"] == 20 and read20["model_history_window"] == 2
    # The same from disk: the window comes from the checkpoint's config, and --record keeps to it.
    import shutil

    from eager.model.checkpoint import write_manifest

    capped_dir = tmp_path / "capped"
    shutil.copytree(ckpt, capped_dir)
    config = json.loads((capped_dir / "config.json").read_text())
    config["recipe"]["max_history"] = 2
    (capped_dir / "config.json").write_text(json.dumps(config))
    write_manifest(capped_dir)
    on_disk = [str(capped_dir) if arg == str(ckpt) else arg for arg in common]
    assert main(["eval", "--split", "valid", "--limit", "8", "--out", str(tmp_path / "disk"), *on_disk]) == 0
    assert json.loads(capsys.readouterr().out)["max_history"] == 2
    assert {json.loads(line)["user"]: json.loads(line)["ranked"] for line in (tmp_path / "disk" / "predictions.jsonl").open()} == lists
    assert main(["eval", "--split", "test", "--max-history", "20", "--record", *on_disk]) == 2
    assert "reads the last 2 of the 20 items" in capsys.readouterr().err
    history = [data.item_keys[i] for i in eval_cases(data, "valid")[0].history]
    assert len(history) > 2
    keys = lambda model, items: [r.key for r in recommend_keys(model, data, items, k=5, beams=10)]  # noqa: E731
    assert keys(capped, history) == keys(capped, history[-2:])
    uncapped = load_checkpoint(ckpt, base=str(base_dir))
    assert uncapped.history_window == TEST_RECIPE.max_history
    assert keys(uncapped, history) != keys(uncapped, history[-2:])  # so the cut above is not a no-op
    assert main(["eval", "--split", "valid", "--max-history", "0", *common]) == 2
    assert "--max-history must be at least 1" in capsys.readouterr().err
    assert main(["eval", "--split", "test", "--max-history", "2", "--record", *common]) == 2  # a diagnostic too
    assert "--max-history 2 is a diagnostic" in capsys.readouterr().err
    # --exclude-history: the search never returns a user's earlier items (all of them, beyond the prompt's 2).
    args = ["eval", "--split", "valid", "--limit", "8", "--max-history", "2", "--exclude-history", *common]
    assert main([*args, "--out", str(tmp_path / "ex")]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert fresh["exclude_history"] is True and fresh["history_items@10"] == 0
    earlier = {data.user_keys[c.user]: {data.item_keys[i] for i in c.history} for c in eval_cases(data, "valid", 100)[:8]}
    rows = [json.loads(line) for line in (tmp_path / "ex" / "predictions.jsonl").open()]
    assert all(len(row["ranked"]) == 20 and not set(row["ranked"]) & earlier[row["user"]] for row in rows)
    assert short["history_items@10"] > 0  # without it, the same prompts did return earlier items
    assert main(["eval", "--split", "test", "--exclude-history", "--record", *common]) == 2
    assert "--exclude-history is a diagnostic" in capsys.readouterr().err
    assert main(["eval", "--split", "test", "--exact", "--record", *common]) == 2  # a diagnostic, never recorded
    assert main(["eval", "--split", "test", "--limit", "8", "--record", *common]) == 2  # partial runs are not recorded
    assert main(["eval", "--split", "test", "--beams", "10", "--record", "--dtype", "fp32", *common]) == 0
    recorded = json.loads((ckpt / "metrics.json").read_text())["test"]
    assert recorded["users"] == json.loads(capsys.readouterr().out)["users"] == 60 and recorded["dtype"] == "fp32"
    load_checkpoint(ckpt, base=str(base_dir))  # the manifest was refreshed: the checkpoint still verifies
    assert main(["eval", "--checkpoint", str(tmp_path / "nothing"), "--json"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    # The item2index probe: a seeded sample of titled items, each answered with real items.
    assert main(["eval", "--task", "item2index", "--limit", "6", "--beams", "10", "--out", str(tmp_path / "probe"), *common]) == 0
    probe = json.loads(capsys.readouterr().out)
    assert probe["items"] == 6 and 0 <= probe["hit@1"] <= probe["hit@10"] <= 1 and probe["chance@10"] == 10 / 50
    assert json.loads((tmp_path / "probe" / "metrics.json").read_text())["hit@10"] == probe["hit@10"]
    assert main(["eval", "--task", "item2index", "--dataset", "ml-100k", "--json"]) == 2
    assert "give --checkpoint" in capsys.readouterr().err


def test_an_interrupted_stage_resumes_after_its_last_epoch(cyclic_data, base_dir, tmp_path):
    model, tok = _tiny(base_dir)
    index = _index(cyclic_data)
    trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", cyclic_data))
    samples = build_samples(cyclic_data, index, ("seqrec",))[:32]
    stage = replace(TEST_RECIPE.stage2, epochs=2, max_steps=None)
    recipe = replace(TEST_RECIPE, eval_users=4, eval_beams=4)

    def crash_after_first_epoch(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_stage("stage2", model, tok, index, trie, cyclic_data, samples, stage, recipe, None, tmp_path,
                    crash_after_first_epoch, progress=False)
    model2, tok2 = _tiny(base_dir)
    trie2 = CodeTrie(index, add_code_tokens(model2, tok2, index, "mean", cyclic_data))
    # Other settings must not splice into the saved run: a clear refusal naming what differs, the state kept.
    refused = []
    with pytest.raises(ValueError, match=re.escape(f"settings (stage.lr: {stage.lr!r} → 0.001). Rerun")):
        train_stage("stage2", model2, tok2, index, trie2, cyclic_data, samples, replace(stage, lr=1e-3), recipe, None,
                    tmp_path, refused.append, progress=False)
    assert not refused and (tmp_path / "stage2_state.pt").exists()
    records = []
    _, _, _, info = train_stage("stage2", model2, tok2, index, trie2, cyclic_data, samples, stage, recipe, None,
                                tmp_path, records.append, progress=False)
    assert records[0] == {"stage": "stage2", "resumed_at_epoch": 1}
    assert [h["epoch"] for h in info["history"]] == [1, 2]
    assert info["history"][1]["step"] == 2 * info["history"][0]["step"]

    # --restart: the other settings train from scratch, and the state they would have clashed with is kept.
    before = (tmp_path / "stage2_state.pt").read_bytes()
    model3, tok3 = _tiny(base_dir)
    trie3 = CodeTrie(index, add_code_tokens(model3, tok3, index, "mean", cyclic_data))
    restarted = []
    _, _, _, info3 = train_stage("stage2", model3, tok3, index, trie3, cyclic_data, samples, replace(stage, lr=1e-3),
                                 recipe, None, tmp_path, restarted.append, progress=False, restart=True)
    kept = sorted(tmp_path.glob("stage2_state.set-aside-*.pt"))
    assert len(kept) == 1 and kept[0].read_bytes() == before
    assert restarted[0] == {"stage": "stage2", "set_aside": str(kept[0])}
    assert not any("resumed_at_epoch" in r for r in restarted)
    assert [h["epoch"] for h in info3["history"]] == [1, 2]
    assert torch.load(tmp_path / "stage2_state.pt", weights_only=False)["settings"]["stage.lr"] == 1e-3


def test_a_stage_stopped_mid_epoch_resumes_from_its_last_save_to_the_same_weights(cyclic_data, base_dir, tmp_path,
                                                                                   monkeypatch):
    """A save after every step; a run stopped after 5 steps resumes at batch 5 and ends where an
    uninterrupted run ends, weight for weight (order, generator, optimizer and RNG all carried)."""
    monkeypatch.setenv(train_module.SAVE_EVERY_ENV, "1e-9")
    index = _index(cyclic_data)
    samples = build_samples(cyclic_data, index, ("seqrec",))[:96]
    stage = replace(TEST_RECIPE.stage2, epochs=1, max_steps=None)
    recipe = replace(TEST_RECIPE, eval_users=4, eval_beams=4)

    def run(work, records):
        model, tok = _tiny(base_dir)
        trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", cyclic_data))
        return train_stage("stage2", model, tok, index, trie, cyclic_data, samples, stage, recipe, None, work,
                           records.append, progress=False)

    _, whole, _, _ = run(tmp_path / "whole", [])
    calls, real = [], train_module.compute_loss

    def stop_at_sixth_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "compute_loss", stop_at_sixth_step)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "split", [])
    monkeypatch.setattr(train_module, "compute_loss", real)
    assert not list((tmp_path / "split").glob("*.part"))  # every save was whole
    records = []
    _, resumed, _, info = run(tmp_path / "split", records)
    assert records[0] == {"stage": "stage2", "resumed_at_epoch": 0, "resumed_at_batch": 5}
    assert info["history"][0]["step"] == len(samples) // stage.batch_size
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.allclose(whole[name], resumed[name], atol=1e-6), name


@pytest.mark.parametrize("batch_tokens", [None, 300])
def test_stage_runs_under_torchrun_with_two_processes(base_dir, tmp_path, batch_tokens):
    """Data-parallel training through accelerate (gloo on CPU): both ranks end with the same weights,
    also when a token budget cuts each process's share into its own number of batches."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
         str(worker), str(base_dir), str(tmp_path), str(batch_tokens or "")],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    assert ranks[0]["digest"] == ranks[1]["digest"]  # gradients were all-reduced
    assert ranks[0]["lora_b_moved"]  # and the adapter did train
    if batch_tokens is None:
        assert ranks[0]["steps"] == 64 // 2 // 8  # each process took half of the samples
    else:  # smaller batches (300 tokens hold fewer than 8 samples), the same count on both processes
        assert ranks[0]["steps"] == ranks[1]["steps"] > 64 // 2 // 8
    # Validation split across the two processes scores exactly what one process scores on every case.
    assert ranks[0]["shared_valid"] == ranks[1]["shared_valid"] == ranks[0]["alone_valid"]
    assert ranks[0]["shared_ranks"] == ranks[1]["shared_ranks"] == ranks[0]["alone_ranks"]


@given(st.lists(st.integers(1, 300), min_size=1, max_size=300), st.integers(1, 16), st.integers(1, 6))
@settings(max_examples=50, deadline=None)
def test_bucketed_batches_cover_everything_once(lengths, batch_size, bucket):
    from eager.train.batching import bucketed_batches

    order = list(np.random.default_rng(0).permutation(len(lengths)))
    batches = bucketed_batches(order, lengths, batch_size, bucket)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in batches)


@given(st.lists(st.integers(1, 300), min_size=1, max_size=300), st.integers(1, 64), st.integers(1, 6),
       st.integers(300, 2000))
@settings(max_examples=50, deadline=None)
def test_token_budget_batches_stay_under_it(lengths, batch_size, bucket, max_tokens):
    from eager.train.batching import bucketed_batches

    order = list(np.random.default_rng(0).permutation(len(lengths)))
    batches = bucketed_batches(order, lengths, batch_size, bucket, max_tokens=max_tokens)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size and sum(lengths[i] for i in b) <= max_tokens for b in batches)
    # A batch closes only when the next sample would not fit: no two neighbours in a bucket could merge.
    plain = bucketed_batches(order, lengths, batch_size, bucket)
    assert len(batches) >= len(plain)


def test_token_lengths_are_the_encoded_lengths(cyclic_data, base_dir):
    from eager.train.batching import encode, token_lengths

    _, tok = _tiny(base_dir)
    index = _index(cyclic_data)
    samples = build_samples(cyclic_data, index, ("seqrec", "item2index", "index2item", "fusionseqrec"), seed=1)
    for max_len in (24, 64, 256):  # 24 cuts prompts and titles, 256 cuts nothing
        assert token_lengths(tok, samples, max_len, chunk=7) == [len(encode(tok, s, max_len).ids) for s in samples]


def test_bucketed_batches_cut_padding():
    from eager.train.batching import bucketed_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 400, size=2000).tolist()
    order = rng.permutation(len(lengths)).tolist()

    def padding(groups):
        return sum(max(lengths[i] for i in g) * len(g) - sum(lengths[i] for i in g) for g in groups)

    plain = [order[i : i + 32] for i in range(0, len(order), 32)]
    assert padding(bucketed_batches(order, lengths, 32, 20)) < 0.2 * padding(plain)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(2, 12), st.sampled_from([64, 200, 400]), st.integers(0, 10_000))
def test_packed_batches_give_the_padded_loss(cyclic_data, base_dir, size, row_len, seed):
    """Packing changes the layout, never the loss: no sample sees another, GCT reads the same states."""
    from eager.train.attention import VARLEN_ATTENTION, TrainingAttention
    from eager.train.batching import collate_packed, pack_rows

    model, tok = _tiny(base_dir)
    model.eval()
    index = _index(cyclic_data)
    add_code_tokens(model, tok, index, "mean", cyclic_data)
    samples = build_samples(cyclic_data, index, ("seqrec", "index2item"), seed=seed)[:size]
    projectors = DecompressionProjectors(32, _embeddings(cyclic_data))
    config = GCTConfig(negatives=16)
    padded = collate(tok, samples, 256)
    packed = collate_packed(tok, samples, 256, row_len)
    assert packed.input_ids.shape[0] <= padded.input_ids.shape[0]
    assert packed.tokens == padded.tokens  # every token is there once
    with torch.no_grad():
        a = compute_loss(model, padded, projectors, config, torch.Generator().manual_seed(0))
        b = compute_loss(model, packed, projectors, config, torch.Generator().manual_seed(0))
        with TrainingAttention(model, "varlen") as attention:  # per-sample attention from the boundaries
            assert model.config._attn_implementation == VARLEN_ATTENTION
            c = compute_loss(model, packed, projectors, config, torch.Generator().manual_seed(0))
            with pytest.raises(ValueError, match="boundaries"):  # the layers really go through it
                compute_loss(model, replace(packed, cu_seqlens=None), projectors, config)
        assert model.config._attn_implementation != VARLEN_ATTENTION and attention.varlen
    assert set(a) == set(b) == set(c)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
        assert torch.allclose(a[name], c[name], atol=1e-5), name
    # The boundaries are the samples' (and each row's padding tail), in order, covering every token once.
    lengths = (packed.cu_seqlens[1:] - packed.cu_seqlens[:-1]).tolist()
    assert sum(lengths) == packed.input_ids.numel() and max(lengths) == packed.max_seqlen
    assert sorted(n for n in lengths if n) == sorted(
        [int(m) for m in padded.attention_mask.sum(1)] + [int(r) for r in (1 - packed.attention_mask).sum(1) if r])
    rows = pack_rows([5, 9, 3, 7, 2], 10)
    assert sorted(i for r in rows for i in r) == list(range(5)) and all(sum([5, 9, 3, 7, 2][i] for i in r) <= 10 for r in rows)
