"""EAGER-LLM demo: build a purchase history, watch item codes decode into products, compare ablations.

Layout and wiring only; everything it does is in ``eager.demo`` (which the tests call directly).
Run: ``./run demo`` (sets up on first use), ``python app.py``, or as a Hugging Face Space. Settings:
$EAGER_DEMO_DATASET (default beauty), $EAGER_DATA_ROOT (unset: the dataset is downloaded and prepared
under ./data on first start), $EAGER_CHECKPOINTS (default ./checkpoints).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import gradio as gr

from eager.decoding.engine import BeamStep
from eager.demo import views
from eager.demo.service import DemoError, DemoService, RecommendOutcome
from eager.model.variants import VARIANTS

try:  # ZeroGPU on Hugging Face Spaces: model calls borrow a GPU; elsewhere a no-op
    import spaces

    gpu = spaces.GPU
except ImportError:
    def gpu(fn):
        return fn

EMPTY_STATE = {"history": [], "held_out": None, "user": None}


def _fail(err: Exception) -> gr.Error:
    return gr.Error(str(err), print_exception=False)


def build_demo(service: DemoService) -> gr.Blocks:
    def state_view(state):
        return views.history_table(service, state["history"]), _user_line(state)

    def _user_line(state):
        if state["user"]:
            return f"Real test user **{state['user']}**; their held-out next purchase: {service.title(state['held_out'])}"
        return "Your own history (no held-out item)." if state["history"] else "Empty history."

    def do_search(query):
        try:
            choices = service.search(query)
        except DemoError as err:
            raise _fail(err) from None
        note = f"{len(choices)} matches" if choices else "No item title contains all of those words."
        return gr.update(choices=choices, value=choices[0][1] if choices else None), note

    def add_item(key, state):
        if not key:
            raise gr.Error("Pick an item from the search results first.")
        state = {**state, "history": [*state["history"], key], "user": None, "held_out": None}
        return state, *state_view(state)

    def remove_last(state):
        state = {**state, "history": state["history"][:-1], "user": None, "held_out": None}
        return state, *state_view(state)

    def clear(_state):
        return dict(EMPTY_STATE), *state_view(EMPTY_STATE)

    def load_user(user_id, state):
        try:
            case = service.user_case(user=user_id or None, seed=None)
        except DemoError as err:
            raise _fail(err) from None
        state = {"history": case["history"], "held_out": case["held_out"], "user": case["user"]}
        return state, *state_view(state), case["user"]

    @gpu
    def recommend_live(state, variant, k, hide_history=True) -> Iterator[tuple]:
        steps_md: list[str] = []
        try:
            yield f"Loading `{variant}` (the first use of a variant takes a while)…", None, "", None
            index = service.model(variant).engine.index
            yield "Decoding…", None, "", None
            for event in service.recommend_stream(state["history"], variant, int(k), state["held_out"], bool(hide_history)):
                if isinstance(event, BeamStep):
                    steps_md.append(views.step_markdown(event, index, service))
                    yield "\n\n".join(steps_md), None, "", None
                elif isinstance(event, RecommendOutcome):
                    from eager.index.figures import code_tree_figure

                    figure = code_tree_figure(index, service.data, highlight=[i.key for i in event.items[:5]],
                                              merge_collapsed=True,
                                              title="Where the top 5 sit in the semantic code tree (red)")
                    yield "\n\n".join(steps_md), views.results_table(event), views.outcome_markdown(event), figure
        except DemoError as err:
            raise _fail(err) from None

    @gpu
    def compare(state, chosen, k, hide_history=True):
        try:
            tables = views.compare_tables(service.compare(state["history"], chosen or None, int(k), state["held_out"],
                                                          bool(hide_history)))
        except DemoError as err:
            raise _fail(err) from None
        return tables

    def lookup(key):
        try:
            found = service.lookup(key)
        except DemoError as err:
            raise _fail(err) from None
        import pandas as pd

        return (f"**{found['title']}** · `{found['key']}` · code `{found['code']}` "
                f"(levels: {', '.join(found['level_sources'])})", pd.DataFrame(found["nearest"]))

    def tree(key):
        from eager.index.figures import code_tree_figure

        try:
            highlight = [key.strip()] if key and key.strip() else []
            return code_tree_figure(service.index(), service.data, highlight=highlight, merge_collapsed=True)
        except (DemoError, KeyError) as err:
            raise _fail(err) from None

    @gpu
    def probe_code(code):
        try:
            out = [service.code_to_title(code, v) for v in service.probe_variants()]
        except DemoError as err:
            raise _fail(err) from None
        if not out:
            raise gr.Error("Needs the full or wo_aat checkpoint.")
        lines = [f"Real title: **{out[0]['title']}** (`{out[0]['code']}`)"]
        lines += [f"- `{o['variant']}` writes: “{o['generated']}” ({o['seconds']} s)" for o in out]
        return "\n".join(lines)

    @gpu
    def probe_title(title):
        try:
            out = [service.title_to_code(title, v) for v in service.probe_variants()]
        except DemoError as err:
            raise _fail(err) from None
        blocks = [f"**`{o['variant']}`** ({o['seconds']} s):\n\n" +
                  "\n".join(f"- `{c['code']}` {c['score']:.2f} → {c['title'][:70]}" for c in o["codes"]) for o in out]
        return "\n\n".join(blocks) or "Needs the full or wo_aat checkpoint."

    def card():
        import json

        info = service.model_card()
        return views.model_card_markdown(info), json.dumps(info["configs"], indent=1)[:20000]

    def recommend_api(history: list[str], variant: str = "full", k: int = 10, hide_history: bool = True) -> dict:
        """Top-k items for a history of item keys (oldest first) from one variant; hide_history=False
        keeps items the history already holds (the model's raw list, as the evaluation scores it)."""
        try:
            outcome = service.recommend(history, variant, k, hide_history=bool(hide_history))
        except DemoError as err:
            raise _fail(err) from None
        return {"variant": variant, "seconds": round(outcome.seconds, 3), "notes": outcome.notes,
                "hid_history": outcome.hid_history,
                "items": [{"rank": i.rank, "key": i.key, "title": i.title, "code": i.code, "score": round(i.score, 4)}
                          for i in outcome.items]}

    def search_api(query: str) -> list[dict]:
        """Catalogue items whose title holds every word of the query."""
        try:
            return [{"key": key, "label": label} for label, key in service.search(query)]
        except DemoError as err:
            raise _fail(err) from None

    with gr.Blocks(title="EAGER-LLM demo") as demo:
        state = gr.State(dict(EMPTY_STATE))
        gr.Markdown("# EAGER-LLM: recommending by generating item codes\n"
                    "Each product is four new tokens: two from its text (semantic) and two from how people buy it "
                    "(behaviour). A 135M model (4-bit MLPs on CPU) writes the next item's code; beam search over the "
                    "catalogue's code tree keeps every answer a real product.")
        status = gr.Markdown(elem_id="status")
        with gr.Tab("Recommend"):
            with gr.Row():
                with gr.Column(scale=1):
                    query = gr.Textbox(label="Search the catalogue", placeholder="e.g. lipstick", elem_id="search")
                    found = gr.Dropdown(label="Matches", choices=[], elem_id="matches")
                    found_note = gr.Markdown()
                    with gr.Row():
                        add = gr.Button("Add to history", elem_id="add")
                        undo = gr.Button("Remove last")
                        reset = gr.Button("Clear")
                    user_id = gr.Textbox(label="Load a real test user (id, or empty for a random one)",
                                         elem_id="user-id")
                    load = gr.Button("Load user", elem_id="load-user")
                with gr.Column(scale=2):
                    user_line = gr.Markdown("Empty history.", elem_id="user-line")
                    history = gr.Dataframe(headers=views.HISTORY_COLUMNS, label="History (oldest first)",
                                           interactive=False, elem_id="history")
            with gr.Row():
                variant = gr.Dropdown(list(VARIANTS), value="full", label="Variant")
                k = gr.Slider(1, service.config.max_k, value=10, step=1, label="Top k")
                hide = gr.Checkbox(value=True, label="Leave out the history's items", elem_id="hide-history",
                                   info="Untick for the model's raw list, the one the evaluation scores")
                go = gr.Button("Recommend", variant="primary", elem_id="recommend")
            with gr.Row():
                steps = gr.Markdown(label="Decoding, token by token", elem_id="steps")
                with gr.Column():
                    summary = gr.Markdown(elem_id="summary")
                    results = gr.Dataframe(headers=views.RESULT_COLUMNS, label="Recommendations", interactive=False,
                                           elem_id="results")
            tree_plot = gr.Plot(label="Code tree")
            examples = _example_users(service)
            if examples:
                gr.Examples(examples, inputs=[user_id], label="Curated real users (then press Load user)")
        with gr.Tab("Compare variants"):
            gr.Markdown("On the Recommend tab's history, k and “Leave out the history's items” setting.")
            # Ticked: the variants that have checkpoints (all of them when none do, so Compare explains).
            chosen = gr.CheckboxGroup(list(VARIANTS), value=service.available_variants() or list(VARIANTS),
                                      label="Variants")
            run_compare = gr.Button("Compare on this history", elem_id="compare")
            compare_summary = gr.Dataframe(label="Latency and held-out rank", interactive=False, elem_id="compare-summary")
            compare_lists = gr.Dataframe(label="Top-k side by side", interactive=False)
            compare_overlap = gr.Dataframe(label="Items shared between top-k lists", interactive=False)
        with gr.Tab("Explore the index"):
            item_key = gr.Textbox(label="Item key", elem_id="lookup-key")
            with gr.Row():
                look = gr.Button("Look up")
                draw = gr.Button("Draw the code tree around it")
            looked = gr.Markdown()
            nearest = gr.Dataframe(label="Nearest items in code (longest shared prefix)", interactive=False)
            index_plot = gr.Plot()
        with gr.Tab("Language probe"):
            gr.Markdown("What annealing trades: `full` (tuned on recommendation last) against `w/o AAT`.")
            code_in = gr.Textbox(label="Item code or key → title (index2item)")
            code_go = gr.Button("Generate the title")
            code_out = gr.Markdown()
            title_in = gr.Textbox(label="Title → item code (item2index)")
            title_go = gr.Button("Generate the code")
            title_out = gr.Markdown()
        with gr.Tab("Model card"):
            card_md = gr.Markdown()
            card_json = gr.Code(language="json", label="Training configs", max_lines=40)

        history_out = [history, user_line]
        query.submit(do_search, query, [found, found_note], api_visibility="private")
        add.click(add_item, [found, state], [state, *history_out], api_visibility="private")
        undo.click(remove_last, state, [state, *history_out], api_visibility="private")
        reset.click(clear, state, [state, *history_out], api_visibility="private")
        load.click(load_user, [user_id, state], [state, *history_out, user_id], api_visibility="private")
        go.click(recommend_live, [state, variant, k, hide], [steps, results, summary, tree_plot], api_visibility="private",
                 concurrency_limit=2).then(lambda: service.status(), None, status, api_visibility="private")
        run_compare.click(compare, [state, chosen, k, hide], [compare_lists, compare_overlap, compare_summary],
                          api_visibility="private", concurrency_limit=1).then(
            lambda: service.status(), None, status, api_visibility="private")
        look.click(lookup, item_key, [looked, nearest], api_visibility="private")
        draw.click(tree, item_key, index_plot, api_visibility="private")
        code_go.click(probe_code, code_in, code_out, api_visibility="private", concurrency_limit=1)
        title_go.click(probe_title, title_in, title_out, api_visibility="private", concurrency_limit=1)
        demo.load(lambda: (service.status(), *card()), None, [status, card_md, card_json], api_visibility="private")
        gr.api(recommend_api, api_name="recommend", concurrency_limit=2)
        gr.api(search_api, api_name="search")
    return demo


def _example_users(service: DemoService, count: int = 3) -> list[list[str]]:
    try:
        return [[service.user_case(seed=seed)["user"]] for seed in range(count)]
    except DemoError:
        return []


def main() -> None:
    import sys

    from eager.demo.setup import ensure_demo_data

    try:  # without its data the demo still starts, and says what is missing and what to do
        print(f"eager demo: {ensure_demo_data()}", file=sys.stderr)
    except (OSError, RuntimeError, ValueError) as err:
        print(f"eager demo: {err}", file=sys.stderr)
    service = DemoService()
    demo = build_demo(service)
    demo.queue(max_size=int(os.environ.get("EAGER_QUEUE_SIZE", "32")))
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))


if __name__ == "__main__":
    main()
