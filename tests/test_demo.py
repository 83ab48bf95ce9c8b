"""The demo: service functions, the Gradio app through gradio_client, and a real browser (Playwright)."""

import re
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from eager.decoding.engine import BeamStep
from eager.demo.service import DemoConfig, DemoError, DemoService, RecommendOutcome
from eager.model.variants import VARIANTS
from eager.train.pipeline import train_variant
from tests.conftest import make_cyclic_data
from tests.tiny import TEST_RECIPE, load_tiny, toy_embeddings, toy_index

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def demo_root(base_dir, tmp_path_factory):
    """A 50-item catalogue saved as "beauty", with tiny checkpoints of all four variants."""
    from eager.data import load_dataset

    root = tmp_path_factory.mktemp("demo")
    make_cyclic_data().save(root / "data" / "Beauty")
    data = load_dataset("beauty", root / "data")
    recipe = replace(TEST_RECIPE, stage1=replace(TEST_RECIPE.stage1, max_steps=6),
                     stage2=replace(TEST_RECIPE.stage2, max_steps=2), eval_users=4, eval_beams=4)
    for name, variant in VARIANTS.items():
        model, tok = load_tiny(base_dir)
        train_variant(data, variant, recipe, root / "checkpoints" / "beauty" / name, root / "artifacts",
                      base=str(base_dir), progress=False, model=model, tokenizer=tok,
                      index=toy_index(data, variant.index_source), tables=toy_embeddings(data))
    return root


@pytest.fixture(scope="module")
def service(demo_root, base_dir):
    return DemoService(DemoConfig(dataset="beauty", data_root=str(demo_root / "data"),
                                  checkpoints=str(demo_root / "checkpoints"), dtype="fp32", base=str(base_dir)))


def test_catalogue_search_users_and_history_checks(service):
    labels = service.search("Number 4")
    assert labels[0][1] == "I004" and all("number" in label and "4" in label for label, _ in labels)
    assert service.search("I007")[0][1] == "I007"  # a key finds its item
    assert service.search("zzqx blorp") == [] and service.search("   ") == []
    case = service.user_case(seed=3)
    assert case["history"] and case["held_out"] in service.data.key_to_index()
    assert service.user_case(user=case["user"]) == case
    with pytest.raises(DemoError, match="No user"):
        service.user_case(user="nobody")
    with pytest.raises(DemoError, match="empty"):
        service.check_history([])
    with pytest.raises(DemoError, match="'not-an-item'"):
        service.check_history(["I001", "not-an-item"])
    with pytest.raises(DemoError, match="at most 200"):
        service.check_history(["I001"] * 500)
    keys, notes = service.check_history(["I001"] * 30)
    assert len(keys) == 20 and "last 20" in notes[0]


def test_each_variant_reads_the_history_it_trained_on(service):
    history = next(h for seed in range(50) if len(h := service.user_case(seed=seed)["history"]) > 3)
    full = service.model("full")
    assert full.history_window == TEST_RECIPE.max_history  # from its checkpoint's recipe, as the card says
    assert {r["variant"]: r["history read"] for r in service.model_card()["rows"]}["full"] == full.history_window
    whole = service.recommend(history, "full", 5, hide_history=False)
    assert whole.history == history and not whole.notes
    service._models["full"] = replace(full, history_window=3)  # as if its recipe had capped training at 3
    try:
        capped = service.recommend(history, "full", 5, hide_history=False)
        last3 = service.recommend(history[-3:], "full", 5, hide_history=False)
    finally:
        service._models["full"] = full
    assert capped.history == history[-3:] and f"reads the last 3 of your {len(history)} items" in capped.notes[0]
    assert [i.key for i in capped.items] == [i.key for i in last3.items]
    assert [i.score for i in capped.items] == pytest.approx([i.score for i in last3.items])
    assert [i.score for i in capped.items] != pytest.approx([i.score for i in whole.items])  # the cut changed what it read


def test_recommend_decodes_real_items_with_reasons_and_the_held_out_rank(service):
    case = service.user_case(seed=1)
    seen = []
    outcome = service.recommend(case["history"], "full", 5, case["held_out"], on_step=seen.append)
    assert len(outcome.items) == 5 and all(i.key in service.data.key_to_index() for i in outcome.items)
    assert [s.level for s in seen] == [0, 1, 2, 3]
    assert [s.source for s in outcome.steps] == ["semantic", "semantic", "behaviour", "behaviour"]
    ranked = [i.key for i in outcome.items]
    assert outcome.held_out_rank == (ranked.index(case["held_out"]) + 1 if case["held_out"] in ranked else None)
    index = service.index()
    for item in outcome.items:
        for share in item.shares:  # every reason is a true shared prefix
            levels = [lv for lv, s in enumerate(index.level_sources) if s == share["source"]][: share["depth"]]
            assert all(index.code_of(share["key"])[lv] == index.code_of(item.key)[lv] for lv in levels)
    # Whether the list is certified exact agrees with an exact search of the same model.
    from eager.decoding.engine import exact_top_k
    from eager.demo.views import outcome_markdown

    # By default the history's own items are left out, so the exact search leaves them out too.
    assert outcome.hid_history and not set(ranked) & set(case["history"])
    exact = exact_top_k(service.model("full").engine, [outcome.history], k=5, beams=service.config.beams,
                        exclude=[set(case["history"])])
    assert outcome.exact == (exact.beams_needed[0] == service.config.beams)
    assert (ranked == [r.key for r in exact.recommendations[0]]) or not outcome.exact
    assert ("provably" in outcome_markdown(outcome)) == outcome.exact and "left out" in outcome_markdown(outcome)
    # Unticked: the model's raw list, as `eager eval` scores it.
    raw = service.recommend(case["history"], "full", 5, case["held_out"], hide_history=False)
    raw_search = service.model("full").engine.search([outcome.history], k=5, beams=service.config.beams)
    assert [i.key for i in raw.items] == [r.key for r in raw_search.recommendations[0]]
    assert not raw.hid_history and "left out" not in outcome_markdown(raw)
    padded = service.recommend([" ", *case["history"], ""], "full", 5)  # blanks are dropped, not looked up
    assert [i.key for i in padded.items] == ranked
    events = list(service.recommend_stream(case["history"], "wo_gct", 5))
    assert [type(e) for e in events] == [BeamStep] * 4 + [RecommendOutcome]
    with pytest.raises(DemoError, match="Unknown variant"):
        service.recommend(["I001"], "bogus", 5)
    with pytest.raises(DemoError, match="between 1 and 20"):
        service.recommend(["I001"], "full", 500)
    with pytest.raises(DemoError, match="empty"):
        list(service.recommend_stream([], "full", 5))


def test_compare_lookup_probe_and_model_card(service):
    comparison = service.compare(["I010", "I011", "I012"], k=5, held_out="I013")
    assert set(comparison["outcomes"]) == set(VARIANTS)
    overlap = comparison["overlap"]
    assert all(overlap[v][v] == 5 for v in VARIANTS)
    assert all(overlap[a][b] == overlap[b][a] for a in VARIANTS for b in VARIANTS)
    found = service.lookup("I020")
    shared = [n["shared_levels"] for n in found["nearest"]]
    assert shared == sorted(shared, reverse=True) and "I020" not in [n["key"] for n in found["nearest"]]
    with pytest.raises(DemoError, match="not an item key"):
        service.lookup("<a_1>garbage")
    code = service.index().text_of("I005")
    probe = service.code_to_title(code, "wo_aat", max_new_tokens=4)
    assert probe["key"] == "I005" and probe["title"] == "item number 5" and isinstance(probe["generated"], str)
    with pytest.raises(DemoError, match="not the code of any item"):
        service.code_to_title("<z_9>", "full")
    back = service.title_to_code("item number 5", "full", k=3)
    assert len(back["codes"]) == 3 and all(c["key"] in service.data.key_to_index() for c in back["codes"])
    card = service.model_card()
    assert {r["variant"] for r in card["rows"]} == set(VARIANTS) and "McAuley" in card["terms"]


def test_a_recorded_rerun_shows_on_the_model_card_beside_its_variant(demo_root, base_dir, tmp_path, capsys):
    import json
    import shutil

    from eager.cli import main
    from eager.data import load_dataset
    from eager.demo import views
    from eager.model.checkpoint import read_config

    shipped = tmp_path / "checkpoints" / "beauty"
    shutil.copytree(demo_root / "checkpoints" / "beauty", shipped)
    data = load_dataset("beauty", demo_root / "data")
    recipe = replace(TEST_RECIPE, stage1=replace(TEST_RECIPE.stage1, max_steps=6),
                     stage2=replace(TEST_RECIPE.stage2, max_steps=2), eval_users=4, eval_beams=4, train_seed=1)
    model, tok = load_tiny(base_dir)
    rerun = tmp_path / "full-seed1"
    train_variant(data, VARIANTS["full"], recipe, rerun, tmp_path / "artifacts", base=str(base_dir), progress=False,
                  model=model, tokenizer=tok, index=toy_index(data, "dual"), tables=toy_embeddings(data))
    assert main(["lab", "rerun", "--checkpoint", str(shipped / "full"), "--from", str(rerun)]) == 0
    assert json.loads(capsys.readouterr().out)["train_seed"] == 1
    read_config(shipped / "full")  # the manifest was refreshed: the checkpoint still loads
    recorded = json.loads((rerun / "metrics.json").read_text())["selection"]
    (entry,) = json.loads((shipped / "full" / "metrics.json").read_text())["reruns"]
    assert entry["train_seed"] == 1 and entry["selection"] == recorded
    assert main(["lab", "rerun", "--checkpoint", str(shipped / "full"), "--from", str(rerun)]) == 0  # again: replaced
    assert len(json.loads((shipped / "full" / "metrics.json").read_text())["reruns"]) == 1

    service = DemoService(DemoConfig(dataset="beauty", data_root=str(demo_root / "data"),
                                     checkpoints=str(tmp_path / "checkpoints"), dtype="fp32", base=str(base_dir)))
    card = service.model_card()
    assert {r["variant"] for r in card["rows"]} == set(VARIANTS)
    (row,) = card["reruns"]
    assert row["variant"] == "full, train seed 1" and row["valid recall@10"] == recorded["recall@10"]
    text = views.model_card_markdown(card)
    assert "| full, train seed 1 |" in text and "not evidence" in text

    for other, reason in ((shipped / "full", "same seed"), (shipped / "wo_gct", "its variant is 'wo_gct'")):
        assert main(["lab", "rerun", "--checkpoint", str(shipped / "full"), "--from", str(other)]) == 2
        assert reason in capsys.readouterr().err

    # A rerun is judged by what its recipe trains, not by its name: a search names each seed's trial
    # apart, while a recipe that trains differently is no rerun, whatever it is called.
    from eager.model.checkpoint import write_manifest

    def rerun_with(name: str, change) -> Path:
        folder = tmp_path / name
        shutil.copytree(rerun, folder)
        config = json.loads((folder / "config.json").read_text())
        change(config["recipe"])
        (folder / "config.json").write_text(json.dumps(config))
        write_manifest(folder)
        return folder

    renamed = rerun_with("renamed", lambda recipe: recipe.update(name=recipe["name"] + "+trial-seed1"))
    assert main(["lab", "rerun", "--checkpoint", str(shipped / "full"), "--from", str(renamed)]) == 0
    assert json.loads(capsys.readouterr().out)["train_seed"] == 1
    faster = rerun_with("faster", lambda recipe: recipe["stage1"].update(lr=recipe["stage1"]["lr"] * 2))
    assert main(["lab", "rerun", "--checkpoint", str(shipped / "full"), "--from", str(faster)]) == 2
    assert "stage1.lr" in capsys.readouterr().err


def test_compare_reports_variants_without_checkpoints_instead_of_failing(demo_root, base_dir, tmp_path):
    from eager.demo import views

    partial = tmp_path / "checkpoints" / "beauty"
    partial.mkdir(parents=True)
    for name in ("full", "wo_aat"):  # as shipped while an ablation is still untrained
        (partial / name).symlink_to(demo_root / "checkpoints" / "beauty" / name)
    some = DemoService(DemoConfig(dataset="beauty", data_root=str(demo_root / "data"),
                                  checkpoints=str(tmp_path / "checkpoints"), dtype="fp32", base=str(base_dir)))
    comparison = some.compare(["I010", "I011"], list(VARIANTS), k=3)
    assert set(comparison["outcomes"]) == {"full", "wo_aat"}
    assert set(comparison["skipped"]) == {"wo_dki", "wo_gct"}
    _, overlap, summary = views.compare_tables(comparison)
    assert list(summary["variant"]) == ["full", "wo_aat", "wo_dki", "wo_gct"]
    assert summary["held-out rank"].iloc[2].startswith("not compared: no checkpoint")
    assert len(overlap) == 2
    with pytest.raises(DemoError, match="available: full, wo_aat"):
        some.compare(["I010"], ["wo_dki"], k=3)
    with pytest.raises(DemoError, match="Unknown variant"):
        some.compare(["I010"], ["full", "bogus"], k=3)


def test_without_data_or_checkpoints_the_service_explains(tmp_path):
    bare = DemoService(DemoConfig(dataset="beauty", data_root=str(tmp_path / "nothing"), checkpoints=str(tmp_path)))
    assert "eager data prepare --dataset beauty" in bare.status() and "No checkpoints" in bare.status()
    with pytest.raises(DemoError, match="eager data prepare"):
        bare.search("lipstick")
    with pytest.raises(DemoError, match="No checkpoint"):
        bare.model("full")
    with pytest.raises(DemoError, match="nothing to compare"):
        bare.compare(["x"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running_app(service):
    import app

    demo = app.build_demo(service)
    demo.queue(max_size=32)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.LAUNCH_OPTIONS)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_api_end_to_end_bad_inputs_and_concurrency(running_app, service):
    from gradio_client import Client

    client = Client(running_app, verbose=False)
    out = client.predict(["I001", "I002", "I003"], "full", 5, api_name="/recommend")
    assert len(out["items"]) == 5 and all(i["key"] in service.data.key_to_index() for i in out["items"])
    assert client.predict("number 7", api_name="/search")[0]["key"] == "I007"
    assert out["hid_history"] and not {i["key"] for i in out["items"]} & {"I001", "I002", "I003"}
    raw = client.predict(["I001", "I002", "I003"], "full", 5, False, api_name="/recommend")
    assert raw["hid_history"] is False and len(raw["items"]) == 5
    for history, variant, k, message in (([], "full", 5, "empty"), (["I001", "nope"], "full", 5, "nope"),
                                         (["I001"] * 500, "full", 5, "at most 200"),
                                         (["I001"], "no-such-variant", 5, "Unknown variant"),
                                         (["<script>alert(1)</script>"], "full", 5, "Not in the")):
        with pytest.raises(Exception, match=message):
            client.predict(history, variant, k, api_name="/recommend")
    compared = client.predict(["I001", "I002", "I003"], None, 5, api_name="/compare")
    assert set(compared["variants"]) == set(VARIANTS) and all(len(v["items"]) == 5 for v in compared["variants"].values())
    assert compared["overlap"]["full"]["full"] == 5
    with pytest.raises(Exception, match="Unknown variant"):
        client.predict(["I001"], ["full", "bogus"], 5, api_name="/compare")
    # still serving, and ten clients at once all get answers
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda i: Client(running_app, verbose=False).predict(
            [f"I{i:03d}", f"I{i + 1:03d}"], "full", 3, api_name="/recommend"), range(10)))
    assert all(len(a["items"]) == 3 for a in answers)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize("width", [1280, 390])
def test_browser_a_shopper_a_basket_the_decoding_and_compare(running_app, tmp_path, width):
    """The visitor's path at a laptop's and a phone's width: one click on a real shopper recommends,
    search-as-you-type adds to a basket, and Compare shows every variant without sideways scrolling."""
    from playwright.sync_api import expect, sync_playwright

    from scripts.demo_screenshots import open_tab

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(running_app)
        shopper = page.locator("#shopper-0")
        expect(shopper).to_contain_text(re.compile(r"fan, \d+ purchases"), timeout=30_000)
        assert shopper.bounding_box()["y"] < 900  # on the first screen
        shopper.click()  # one click: their basket, then the recommendations
        expect(page.locator("#user-line")).to_contain_text("Real shopper", timeout=30_000)
        expect(page.locator("#results .eg-card")).to_have_count(10, timeout=60_000)
        expect(page.locator("#summary")).to_contain_text("answered in")
        expect(page.locator("#decoding .js-plotly-plot")).to_have_count(1)
        expect(page.locator("#results")).to_contain_text("Why:")
        page.screenshot(path=str(tmp_path / "recommend.png"), full_page=True)
        # A basket of one's own: matches appear as one types, one click adds.
        page.locator("#clear").click()
        expect(page.locator("#history")).to_contain_text("Empty basket", timeout=30_000)
        page.locator("#search textarea, #search input").first.press_sequentially("number 12", delay=30)
        pick = page.locator("#matches label", has_text="item number 12")
        expect(pick).to_be_visible(timeout=30_000)
        pick.click()
        expect(page.locator("#history .eg-chip")).to_have_count(1, timeout=30_000)
        expect(page.locator("#history")).to_contain_text("item number 12")
        expect(page.locator("#user-line")).to_contain_text("Your basket (1 products)")
        page.locator("#recommend").click()
        expect(page.locator("#results .eg-card")).to_have_count(10, timeout=60_000)
        expect(page.locator("#results")).not_to_contain_text("their real next purchase")  # no held-out item here
        open_tab(page, "Compare variants")
        page.locator("#compare").click()
        columns = page.locator("#compare-grid .eg-col")
        expect(columns).to_have_count(4, timeout=60_000)
        expect(page.locator("#compare-grid")).to_contain_text("also in full")
        boxes = [columns.nth(i).bounding_box() for i in range(4)]
        assert all(b["x"] >= 0 and b["x"] + b["width"] <= width + 1 for b in boxes)  # every column in view
        if width >= 1280:
            assert len({round(b["y"]) for b in boxes}) == 1  # side by side
        assert page.evaluate("document.documentElement.scrollWidth") <= width + 1  # no sideways scrolling
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
        browser.close()
    assert (tmp_path / "recommend.png").stat().st_size > 10_000


REAL_CHECKPOINT = REPO / "checkpoints" / "beauty" / "full"


@pytest.mark.slow
@pytest.mark.skipif(not REAL_CHECKPOINT.exists(), reason="no trained Beauty checkpoint in checkpoints/ yet (issue #5)")
def test_real_beauty_checkpoint_through_the_api(shared_data):
    from gradio_client import Client

    import app

    service = DemoService(DemoConfig(dataset="beauty", data_root=str(shared_data), checkpoints=str(REPO / "checkpoints")))
    demo = app.build_demo(service)
    demo.queue(max_size=8)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.LAUNCH_OPTIONS)
    try:
        case = service.user_case(seed=0)
        out = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(case["history"], "full", 10, api_name="/recommend")
        assert len(out["items"]) == 10 and all(i["key"] in service.data.key_to_index() for i in out["items"])
    finally:
        demo.close()
    # The card shows the recorded full evaluations (every user), not the trainer's 1,000-user subset.
    rows = {r["variant"]: r for r in service.model_card()["rows"]}
    assert rows["full"]["valid users"] == rows["full"]["test users"] == service.data.num_users
    # Every shipped variant carries its recorded test run over every user (the Compare tab's card).
    assert set(rows) == set(service.available_variants())
    assert all(r["test users"] == service.data.num_users and r["test recall@10"] > 0 for r in rows.values())


REAL_SCIENTIFIC = REPO / "checkpoints" / "scientific"


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_SCIENTIFIC / "wo_aat").exists(), reason="no CPU-trained Scientific checkpoint shipped")
def test_real_scientific_checkpoint_serves_the_second_dataset(shared_data):
    """The demo's other dataset: the stage-1 checkpoint trained on CPU, recommending real Scientific items."""
    service = DemoService(DemoConfig(dataset="scientific", data_root=str(shared_data),
                                     checkpoints=str(REPO / "checkpoints")))
    assert service.available_variants() == ["wo_aat"]
    case = service.user_case(seed=0)
    outcome = service.recommend(case["history"], "wo_aat", k=10, held_out=case["held_out"])
    catalogue = service.data.key_to_index()
    assert len(outcome.items) == 10 and all(i.key in catalogue for i in outcome.items)
    index = service.index()
    assert len({i.key for i in outcome.items}) == 10 and all(i.code == index.text_of(i.key) for i in outcome.items)
    (row,) = service.model_card()["rows"]
    assert row["test users"] == service.data.num_users and row["test recall@10"] > 0
    with pytest.raises(DemoError, match="full"):  # variants it does not ship are named, not a traceback
        service.recommend(case["history"], "full", k=10)
