"""SASRec on a tiny learnable catalogue: it learns, exports keyed embeddings, reports via the harness."""

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from eager.baselines.popularity import run_popularity
from eager.baselines.sasrec import (
    SASREC_SMOKE_CONFIG,
    config_with,
    pad_batch,
    run_sasrec,
    training_windows,
)
from eager.cli import main
from eager.embeddings.behaviour import load_item_embeddings


@given(st.lists(st.integers(0, 60), min_size=1, max_size=8), st.integers(1, 12))
@settings(max_examples=50, deadline=None)
def test_training_windows_cover_every_transition_once(lengths, max_len):
    sequences = [np.arange(n) for n in lengths]
    windows = training_windows(sequences, max_len)
    transitions = sorted((int(w[i]), int(w[i + 1])) for w in windows for i in range(len(w) - 1))
    expected = sorted((i, i + 1) for n in lengths for i in range(n - 1))
    assert transitions == expected
    assert all(2 <= len(w) <= max_len + 1 for w in windows)


def test_pad_batch_keeps_the_most_recent_items():
    tokens, lengths = pad_batch([np.array([5, 6, 7, 8]), np.array([1])], max_len=3)
    assert tokens.tolist() == [[7, 8, 9], [2, 0, 0]] and lengths.tolist() == [3, 1]


def test_sasrec_learns_and_beats_popularity(cyclic_data, tmp_path):
    config = config_with(SASREC_SMOKE_CONFIG, epochs=40, lr=5e-3, dropout=0.1, eval_every=5, patience=100)
    reports = run_sasrec(cyclic_data, config, tmp_path / "sasrec", progress=False, recipe="smoke")
    pop = run_popularity(cyclic_data, tmp_path / "pop")
    assert reports["valid"]["ndcg@10"] > 0.6
    assert reports["test"]["recall@10"] > pop["test"]["recall@10"] + 0.4
    assert reports["test"]["invalid_rate"] == 0.0
    table = load_item_embeddings(tmp_path / "sasrec", cyclic_data)
    assert table.shape == (cyclic_data.num_items, config.hidden) and np.isfinite(table).all()
    saved = json.loads((tmp_path / "sasrec" / "config.json").read_text())
    assert saved["config"]["hidden"] == config.hidden and saved["history"]
    assert (tmp_path / "sasrec" / "test" / "predictions.jsonl").exists()


def test_a_trained_sasrec_is_re_evaluated_reading_fewer_items(cyclic_data, tmp_path, capsys):
    config = config_with(SASREC_SMOKE_CONFIG, epochs=40, lr=5e-3, dropout=0.1, eval_every=5, patience=100)
    trained = run_sasrec(cyclic_data, config, tmp_path / "sasrec", progress=False)
    cyclic_data.save(tmp_path / "data" / "ml-100k")
    common = ["baseline", "sasrec", "--dataset", "ml-100k", "--data-root", str(tmp_path / "data"), "--json"]
    assert main([*common, "--trained", str(tmp_path / "sasrec")]) == 0  # as trained: the same numbers again
    again = json.loads(capsys.readouterr().out)
    assert again["test"]["ndcg@10"] == round(trained["test"]["ndcg@10"], 4) and again["out"].endswith("history20")
    assert main([*common, "--trained", str(tmp_path / "sasrec"), "--max-history", "1"]) == 0
    last_only = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "sasrec" / "history1" / "test" / "metrics.json").read_text())
    assert written["max_history"] == 1 and written["config"]["trained"] == str(tmp_path / "sasrec")
    # In this catalogue the last item alone decides the next, so reading one item is as good as reading all.
    assert last_only["test"]["recall@10"] > 0.9 and last_only["test"]["users"] == trained["test"]["users"]
    assert json.loads((tmp_path / "sasrec" / "test" / "metrics.json").read_text())["max_history"] == 20  # untouched
    for bad, message in ((["--trained", str(tmp_path / "sasrec"), "--max-history", "21"], "between 1 and 20"),
                         (["--max-history", "5"], "add --trained"),
                         (["--trained", str(tmp_path / "nothing")], "no SASRec at")):
        assert main([*common, *bad]) == 2
        assert message in capsys.readouterr().err
    assert main(["baseline", "pop", *common[2:], "--max-history", "5"]) == 2


def test_same_seed_same_model(cyclic_data, tmp_path):
    config = config_with(SASREC_SMOKE_CONFIG, epochs=2)
    a = run_sasrec(cyclic_data, config, tmp_path / "a", progress=False)
    b = run_sasrec(cyclic_data, config, tmp_path / "b", progress=False)
    assert np.array_equal(load_item_embeddings(tmp_path / "a", cyclic_data), load_item_embeddings(tmp_path / "b", cyclic_data))
    assert a["test"]["ndcg@10"] == b["test"]["ndcg@10"]


def test_cli_baseline_pop_on_real_data(shared_data, tmp_path, capsys):
    assert main(["baseline", "pop", "--dataset", "ml-100k", "--data-root", str(shared_data),
                 "--out", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["test"]["users"] == 943 and 0 < out["test"]["recall@10"] < 0.2
    assert json.loads((tmp_path / "test" / "metrics.json").read_text())["model"] == "pop"


def test_exclude_history_never_ranks_what_the_user_has(cyclic_data, tmp_path):
    """With exclude_history no earlier item of a user appears in its list, and the loss masks the same
    items in training (the masked loss equals a softmax over the unseen items alone)."""
    import torch

    from eager.baselines.sasrec import SASRec, _loss, mask_seen
    from eager.eval.harness import read_rankings

    config = config_with(SASREC_SMOKE_CONFIG, epochs=3)
    from dataclasses import replace

    config = replace(config, exclude_history=True)
    reports = run_sasrec(cyclic_data, config, tmp_path / "sasrec", progress=False, recipe="smoke")
    assert reports["test"]["history_items@10"] == 0.0
    ranked = read_rankings(tmp_path / "sasrec" / "test" / "predictions.jsonl")
    assert all(len(r) == 20 for r in ranked.values())

    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    seen = torch.tensor([[2, 4, 0]])  # tokens: items 1 and 3 seen, 0 = none
    masked = mask_seen(logits, seen, torch.tensor([3]))  # the positive (item 3) stays scorable
    assert masked.tolist() == [[1.0, float("-inf"), 3.0, 4.0]]
    torch.manual_seed(0)
    model = SASRec(6, replace(config, hidden=8, dropout=0.0)).eval()
    tokens, lengths = pad_batch([np.array([0, 1, 2, 3])], 4)
    loss = _loss(model, tokens, lengths, 6, torch.Generator().manual_seed(0))
    hidden = model(tokens[:, :-1], lengths - 1)[0]
    expected = []
    for t in range(3):
        allowed = [i for i in range(6) if i not in range(t + 1) or i == t + 1]
        scores = hidden[t] @ model.item_embeddings[allowed].T
        expected.append(-torch.log_softmax(scores, 0)[allowed.index(t + 1)])
    assert torch.allclose(loss, torch.stack(expected).mean(), atol=1e-5)


def test_sampled_softmax_trains_and_learns(cyclic_data, tmp_path):
    config = config_with(SASREC_SMOKE_CONFIG, epochs=40, lr=5e-3, dropout=0.1, eval_every=5, patience=100, loss="ss")
    from dataclasses import replace

    reports = run_sasrec(cyclic_data, replace(config, negatives=16), tmp_path / "ss", progress=False, recipe="smoke")
    assert reports["valid"]["ndcg@10"] > 0.5
