"""Dataset tab: load (upload, URL, HF dataset repo, demo), a paginated captioned gallery of images and video clips
(a clip shown by its first frame, labelled with its length and frame count, played beside the gallery when clicked;
the clips staging skipped listed with the reason), caption editing, the trigger word, the preflight check (clips
counted, with their frames and length), auto-caption of images and clips (a background run the page polls once a
second) and bulk caption tools (find/replace, add/remove a tag, regenerate one image or clip). A dataset of edit pairs
shows each pair side by side (input, then target), its caption as the instruction; a selected pair's input or target
can be replaced by an upload, and the files left out of a pair are listed with the reason (the gallery, the check)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from app.dataset_store import DatasetStore, Page, url_credentials_hidden
from app.edge import surface
from app.form_view import FormView
from app.job_form import spec_from_form
from app.run import new_run_id
from app.state import RunRegistry
from core.cache import Cache
from core.errors import DatasetError, ErrorCode, JobError, PreflightError
from core.generation import build_tiny_captioner, write_demo_dataset
from core.jobdir import job_folder
from core.pipeline import check_job
from core.secrets import url_credentials
from core.settings import Settings
from core.spec import CAPTION_MODELS, DEFAULT_CAPTION_MODEL, CaptioningSpec, DatasetSpec, validation_error

DEMO_IMAGES = 8
DEMO_TRIGGER = "sks"


@dataclass
class DatasetTab:
    upload: gr.File
    url: gr.Textbox
    url_button: gr.Button
    hf_repo: gr.Textbox
    hf_revision: gr.Textbox
    hf_button: gr.Button
    demo_button: gr.Button
    trigger_word: gr.Textbox
    source: gr.Textbox
    check_button: gr.Button
    report: gr.Markdown
    status: gr.Markdown
    prev_button: gr.Button
    page: gr.Number
    next_button: gr.Button
    page_info: gr.Markdown
    gallery: gr.Gallery
    names: gr.State
    selected: gr.Textbox
    preview: gr.Image
    caption: gr.Textbox
    save_button: gr.Button
    captioner: CaptionControls
    player: gr.Video
    input_preview: gr.Image
    replace_input: gr.UploadButton
    replace_target: gr.UploadButton
    remove_button: gr.Button
    """Shown when the last check flagged images of the curated folder (the dataset doctor's)."""
    confirm_remove: gr.Button


@dataclass
class CaptionControls:
    model: gr.Dropdown
    mode: gr.Radio
    style: gr.Radio
    prefix: gr.Textbox
    start_button: gr.Button
    stop_button: gr.Button
    status: gr.Markdown
    timer: gr.Timer
    find: gr.Textbox
    replacement: gr.Textbox
    replace_button: gr.Button
    tag: gr.Textbox
    add_tag_button: gr.Button
    remove_tag_button: gr.Button
    regenerate_button: gr.Button
    demo_button: gr.Button
    """Builds the tiny random captioner (offline) and picks it: for trying auto-captioning without a download."""


TINY_CAPTIONER_NAME = "tiny-captioner"


def tiny_captioner_dir(settings: Settings) -> Path:
    """Where the demo's tiny captioner lives, beside the tiny demo model."""
    return settings.data_root / "models" / TINY_CAPTIONER_NAME


def build_caption_controls() -> CaptionControls:
    """Auto-caption and the bulk tools, in an accordion under the loading controls."""
    with gr.Accordion("Auto-caption and bulk edit", open=False):
        model = gr.Dropdown(list(CAPTION_MODELS), value=DEFAULT_CAPTION_MODEL, allow_custom_value=True,
                            label="Caption model", info="A name, a Hub model id, or a local model folder")
        with gr.Row():
            mode = gr.Radio(["missing", "all"], value="missing", label="Mode",
                            info="missing: images and clips without a caption; captions edited by hand are always kept")
            style = gr.Radio(["detailed", "short", "tags"], value="detailed", label="Style")
        prefix = gr.Textbox(label="Prefix", placeholder="e.g. a photo of", info="Put before every generated caption")
        with gr.Row():
            start_button = gr.Button("Auto-caption", variant="primary")
            stop_button = gr.Button("Stop")
            demo_button = gr.Button("Use the tiny demo captioner", size="sm")
        status = gr.Markdown()
        timer = gr.Timer(1.0, active=False)
        with gr.Row():
            find = gr.Textbox(label="Find", scale=2)
            replacement = gr.Textbox(label="Replace with", scale=2)
            replace_button = gr.Button("Replace in all captions", scale=1)
        with gr.Row():
            tag = gr.Textbox(label="Tag", scale=2)
            add_tag_button = gr.Button("Add tag", scale=1)
            remove_tag_button = gr.Button("Remove tag", scale=1)
    return CaptionControls(model, mode, style, prefix, start_button, stop_button, status, timer, find, replacement,
                           replace_button, tag, add_tag_button, remove_tag_button,
                           regenerate_button=gr.Button("Regenerate caption", render=False), demo_button=demo_button)


def build() -> DatasetTab:
    with gr.Tab("Dataset", id="dataset"), gr.Row():
        with gr.Column(scale=1, min_width=320):
            upload = gr.File(label="Upload a .zip, or images and video clips (.mp4, .webm, .mov, .mkv) with their "
                                   ".txt captions; edit pairs: a .zip with a control/ folder or NAME_start/NAME_end "
                                   "files", file_count="multiple", type="filepath", elem_id="dataset-upload")
            with gr.Row():
                url = gr.Textbox(label="…or a dataset URL", placeholder="https://… or s3://… (.zip, .tar)", scale=3)
                url_button = gr.Button("Load URL", scale=1)
            with gr.Row():
                hf_repo = gr.Textbox(label="…or a Hub dataset repo", placeholder="user/dataset", scale=2)
                hf_revision = gr.Textbox("main", label="Revision", scale=1)
                hf_button = gr.Button("Load repo", scale=1)
            demo_button = gr.Button("Load demo dataset")
            trigger_word = gr.Textbox(label="Trigger word", placeholder="e.g. sks",
                                      info="Added to every caption that lacks it, at training time")
            source = gr.Textbox(label="Dataset in the job (JSON)", lines=2, elem_classes=["mono"],
                                info="Set by loading a dataset; a URL or repo stays the source until you edit "
                                     "a caption")
            check_button = gr.Button("Check dataset", variant="primary")
            report = gr.Markdown(elem_id="dataset-report")
            with gr.Row():
                remove_button = gr.Button("Remove flagged images", visible=False, size="sm", elem_id="remove-flagged")
                confirm_remove = gr.Button("Confirm: remove them", variant="stop", visible=False, size="sm",
                                           elem_id="confirm-remove")
            captioner = build_caption_controls()
        with gr.Column(scale=2):
            status = gr.Markdown()
            with gr.Row(equal_height=True):
                prev_button = gr.Button("◀ Previous", size="sm", scale=1)
                page = gr.Number(1, label="Page", precision=0, minimum=1, scale=1)
                next_button = gr.Button("Next ▶", size="sm", scale=1)
                page_info = gr.Markdown(scale=3)
            gallery = gr.Gallery(label="Images, clips and captions (click one to edit its caption)", columns=6, rows=4,
                                 height=560, allow_preview=False, object_fit="cover", interactive=False)
            names = gr.State([])
            with gr.Row():
                # An edit pair: its input (before) left of its target (after), in the preview.
                input_preview = gr.Image(label="Input (before)", type="filepath", interactive=False, height=256,
                                         scale=1, visible=False, elem_id="pair-input")
                preview = gr.Image(label="Selected image", type="filepath", interactive=False, height=256, scale=1,
                                   elem_id="selected-image")
                # format=None: served as it is (no ffmpeg conversion); .mov/.mkv may not play in every browser.
                player = gr.Video(label="Selected clip", format=None, interactive=False, height=256, scale=1,
                                  visible=False, autoplay=True, loop=True)
                with gr.Column(scale=2):
                    selected = gr.Textbox(label="Selected file", interactive=False)
                    caption = gr.Textbox(label="Caption", lines=3)
                    with gr.Row():
                        save_button = gr.Button("Save caption")
                        captioner.regenerate_button.render()
                    with gr.Row():
                        replace_input = gr.UploadButton("Replace input", file_types=["image"], type="filepath",
                                                       size="sm", visible=False, elem_id="replace-input")
                        replace_target = gr.UploadButton("Replace target", file_types=["image"], type="filepath",
                                                        size="sm", visible=False, elem_id="replace-target")
    return DatasetTab(upload, url, url_button, hf_repo, hf_revision, hf_button, demo_button, trigger_word, source,
                      check_button, report, status, prev_button, page, next_button, page_info, gallery, names,
                      selected, preview, caption, save_button, captioner, player, input_preview, replace_input,
                      replace_target, remove_button, confirm_remove)


def render_page(page: Page) -> list[Any]:
    """gallery, page number, page info, names on the page."""
    gallery = [(thumb, caption) for thumb, caption, _ in page.items]
    clips = f" · {page.clips} clips" if page.clips else ""
    skipped = f" · {page.skipped_clips} clips skipped (listed last, with the reason)" if page.skipped_clips else ""
    unpaired = f" · {page.unpaired} files unpaired (listed last, with the reason)" if page.unpaired else ""
    what = f"{page.images} pairs (input, then target)" if page.pairs else f"{page.images} images"
    info = (f"Page {page.number} of {page.pages} · {what}{clips}{skipped}{unpaired}" if page.total
            else "No dataset loaded yet.")
    return [gallery, page.number, info, [name for _, _, name in page.items]]


def bind(tab: DatasetTab, *, form: FormView, store: DatasetStore, registry: RunRegistry,  # noqa: C901 (the tab's small event handlers nest here and mccabe adds them all up)
         settings: Settings) -> tuple[Callable[[], list[Any]], list[Any]]:
    """Bind the tab's events; return what a page load runs to show the dataset kept on the server."""
    shown = [tab.gallery, tab.page, tab.page_info, tab.names]
    loaded = [*shown, tab.source, tab.status]

    def refuse_while_training() -> None:
        if registry.busy():
            raise JobError("a training is running: load another dataset when it has finished", code=ErrorCode.BUSY,
                           stage="dataset")

    def after_load(manifest: Any, *, note: str = "") -> list[Any]:
        skipped = manifest.skipped_by_reason()
        why = (" Skipped: " + ", ".join(f"{count} {reason}" for reason, count in skipped.items()) + ".") \
            if skipped else ""
        clips = f" and {len(manifest.clips)} clips" if manifest.clips else ""
        what = f"{len(manifest.images)} images{clips}"
        if manifest.pairs is not None:
            inputs = manifest.pairs.inputs
            what = f"{len(manifest.images)} edit pairs ({inputs} input{'s' if inputs > 1 else ''} each)"
        message = f"Loaded {what} from {manifest.source}.{why}{note}"
        return [*render_page(store.page(1)), json.dumps(store.source()), message]

    @surface
    def load_uploads(files: list[str] | None) -> list[Any]:
        """Load uploaded files (one archive, or images with .txt captions) as the dataset."""
        refuse_while_training()
        return after_load(store.load_uploads([Path(f) for f in files or []], run_id=new_run_id()))

    @surface
    def load_url(url: str) -> list[Any]:
        refuse_while_training()
        if not (url or "").strip():
            raise DatasetError("give the URL of a .zip, .tar or image (http, https or s3)", field="dataset.url")
        url = url.strip()
        # A URL's credentials serve this download only: the job then trains from the staged copy.
        note = " The URL's credentials are not kept: the job uses this copy." if url_credentials(url) else ""
        return after_load(store.load(DatasetSpec(url=url)), note=note)

    @surface
    def load_hf(repo: str, revision: str) -> list[Any]:
        refuse_while_training()
        if not (repo or "").strip():
            raise DatasetError("give a Hub dataset repo as user/name", field="dataset.hf_repo")
        return after_load(store.load(DatasetSpec(hf_repo=repo.strip(), revision=(revision or "main").strip())))

    @surface
    def load_demo(trigger: str) -> list[Any]:
        """The built-in demo: coloured shapes with captions, for the tiny model."""
        refuse_while_training()
        folder = settings.data_root / "uploads" / f"demo-{new_run_id()}"
        try:
            result = after_load(store.load(DatasetSpec(path=str(write_demo_dataset(folder, count=DEMO_IMAGES)))))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return [*result, trigger or DEMO_TRIGGER]

    tab.upload.upload(load_uploads, [tab.upload], loaded, api_name="upload_dataset")
    tab.url_button.click(load_url, [tab.url], loaded, api_name="load_dataset_url")
    tab.hf_button.click(load_hf, [tab.hf_repo, tab.hf_revision], loaded, api_name="load_dataset_repo")
    tab.demo_button.click(load_demo, [tab.trigger_word], [*loaded, tab.trigger_word], api_name="load_demo_dataset")

    def show_page(number: float | None) -> list[Any]:
        return render_page(store.page(int(number or 1)))

    def show_remove() -> list[Any]:
        return [flagged_button(len(store.flagged())), gr.update(visible=False)]

    tab.page.submit(show_page, [tab.page], shown, api_name="gallery_page")
    tab.prev_button.click(lambda n: show_page((n or 1) - 1), [tab.page], shown, api_visibility="private")
    tab.next_button.click(lambda n: show_page((n or 1) + 1), [tab.page], shown, api_visibility="private")

    @surface
    def select_image(names: list[str], event: gr.SelectData) -> list[Any]:
        """An image shows in the preview, a clip plays beside it; a skipped clip is only named (nothing to edit)."""
        name = names[event.index] if isinstance(event.index, int) and event.index < len(names) else None
        if name is None:
            return [gr.skip()] * 7
        pairs = store.is_pairs()
        no_pair = [gr.Image(None, visible=False), gr.UploadButton(visible=False), gr.UploadButton(visible=False)]
        label = "Instruction" if pairs else "Caption"
        if not (store.images_dir / Path(name).name).is_file() and any(
                item["name"] == name for item in [*store.skipped_clips(), *store.unpaired()]):
            return [name, gr.Image(None, visible=True, label="Selected image"), gr.Video(None, visible=False),
                    gr.Textbox("", label=label), *no_pair]
        path = str(store.media_path(name))
        caption = gr.Textbox(store.caption(name), label=label)
        if store.is_clip(name):
            return [name, gr.Image(None, visible=False), gr.Video(path, visible=True), caption, *no_pair]
        if pairs:
            inputs = store.inputs_of(name)
            return [name, gr.Image(path, visible=True, label="Target (after)"), gr.Video(None, visible=False),
                    caption, gr.Image(str(inputs[0]) if inputs else None, visible=True),
                    gr.UploadButton(visible=True), gr.UploadButton(visible=True)]
        return [name, gr.Image(path, visible=True, label="Selected image"), gr.Video(None, visible=False), caption,
                *no_pair]

    tab.gallery.select(select_image, [tab.names], [tab.selected, tab.preview, tab.player, tab.caption,
                                                   tab.input_preview, tab.replace_input, tab.replace_target],
                       api_visibility="private")

    def replacer(side: str) -> Callable[..., list[Any]]:
        @surface
        def replace_side(name: str, upload: str | None, page: float | None) -> list[Any]:
            """Replace the input or the target of the selected pair with the uploaded image."""
            refuse_while_training()
            if not name:
                raise DatasetError("click a pair in the gallery first", field="image")
            if not upload:
                raise DatasetError("no image uploaded", field=f"replace_{side}")
            written = store.replace_side(name, side, Path(upload))
            shown = gr.Image(str(written))
            return [*show_page(page), json.dumps(store.source()), f"Replaced the {side} of {name}.",
                    shown if side == "input" else gr.skip(), shown if side == "target" else gr.skip()]
        return replace_side

    replaced = [*shown, tab.source, tab.status, tab.input_preview, tab.preview]
    tab.replace_input.upload(replacer("input"), [tab.selected, tab.replace_input, tab.page], replaced,
                             api_name="replace_pair_input")
    tab.replace_target.upload(replacer("target"), [tab.selected, tab.replace_target, tab.page], replaced,
                              api_name="replace_pair_target")

    @surface
    def save_caption(name: str, caption: str, page: float | None) -> list[Any]:
        """Write the caption of image (or clip) `name` to its .txt file; the gallery shows it at once."""
        if not name:
            raise DatasetError("click an image or clip in the gallery first", field="image")
        store.save_caption(name, caption or "")
        return [*show_page(page), json.dumps(store.source()), f"Saved the caption of {name}."]

    tab.save_button.click(save_caption, [tab.selected, tab.caption, tab.page], loaded, api_name="save_caption")

    bind_captioning(tab, store=store, show_page=show_page, refuse_while_training=refuse_while_training)

    @surface
    def check_dataset(**values: Any) -> str:
        """The preflight report for the job as the form describes it: the core's check_job (a dry run: staged,
        checked, not trained), as the command line's `check` and the worker's dry run."""
        spec = spec_from_form(values)
        workdir = job_folder(settings.data_root, under="checks")
        try:
            with url_credentials_hidden(spec):
                result = check_job(spec, workdir, settings=settings)
            report, warnings = result.preflight, result.warnings
        except PreflightError as error:  # a dataset that would not train: its report says why
            report, warnings = error.report, spec.warnings()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        # The clips skipped at the load are not in the curated folder the job stages: said here, or never.
        curated = spec.dataset is not None and spec.dataset.path == str(store.images_dir)
        store.flag([name for finding in report.get("doctor") or [] for name in finding.get("removable") or []]
                   if curated else [])
        dropped = store.skipped_clips() if curated else []
        unpaired = store.unpaired() if curated else []
        return (format_report(report, warnings, dropped=dropped, unpaired=unpaired)
                + f"\n- {Cache.from_settings(settings).usage().line()}")

    form.validate_on(tab.check_button.click).then(check_dataset, inputs_kwargs=form.inputs, outputs=[tab.report],
                                                  api_name="check_dataset") \
        .then(show_remove, None, [tab.remove_button, tab.confirm_remove], api_visibility="private")

    def ask_remove() -> Any:
        count = len(store.flagged())
        return gr.update(visible=bool(count), value=f"Confirm: remove {count} images (cannot be undone)")

    @surface
    def remove_flagged(page: float | None) -> list[Any]:
        """Remove the images the last check flagged (near-duplicates but the first of each group, tiny, blurry and
        extreme images) from the curated dataset."""
        refuse_while_training()
        removed = store.remove_flagged()
        note = f"Removed {len(removed)} flagged images: {', '.join(removed[:10])}{' ...' if len(removed) > 10 else ''}"
        return [note, *show_page(page), json.dumps(store.source()), *show_remove()]

    tab.remove_button.click(ask_remove, None, [tab.confirm_remove], api_visibility="private")
    tab.confirm_remove.click(remove_flagged, [tab.page], [tab.status, *shown, tab.source, tab.remove_button,
                                                          tab.confirm_remove], api_name="remove_flagged")

    def keep_trigger(word: str) -> None:
        store.set_trigger_word(word or "")

    tab.trigger_word.change(keep_trigger, [tab.trigger_word], None, api_visibility="private", show_progress="hidden")

    def on_load() -> list[Any]:
        source = store.source()
        return [*render_page(store.page(1)), json.dumps(source) if source else gr.skip(),
                store.trigger_word() or gr.skip()]

    return on_load, [*shown, tab.source, tab.trigger_word]


def flagged_button(count: int) -> Any:
    return gr.update(visible=bool(count), value=f"Remove {count} flagged images")


def caption_spec(model: str, mode: str, style: str, prefix: str) -> CaptioningSpec:
    """The tab's caption settings, checked like a job's `captioning` (errors name the field)."""
    from pydantic import ValidationError

    try:
        return CaptioningSpec(model=model or DEFAULT_CAPTION_MODEL, mode=mode or "missing", style=style or "detailed",
                              prefix=prefix or "")
    except ValidationError as exc:
        raise validation_error(exc, prefix="captioning.", whole="captioning") from None


def bind_captioning(tab: DatasetTab, *, store: DatasetStore, show_page: Callable[[float | None], list[Any]],
                    refuse_while_training: Callable[[], None]) -> None:
    """Auto-caption (started, then polled by the timer until it ends), regenerate, and the bulk tools."""
    controls = tab.captioner
    shown = [tab.gallery, tab.page, tab.page_info, tab.names]
    settings_in = [controls.model, controls.mode, controls.style, controls.prefix]

    @surface
    def start(model: str, mode: str, style: str, prefix: str) -> list[Any]:
        refuse_while_training()
        run = store.start_captioning(caption_spec(model, mode, style, prefix))
        return [f"Auto-caption: {run.what()} with {run.model}…", gr.Timer(active=True)]

    @surface
    def regenerate(name: str, model: str, style: str, prefix: str) -> list[Any]:
        refuse_while_training()
        if not name:
            raise DatasetError("click an image or clip in the gallery first", field="image")
        store.start_captioning(caption_spec(model, "all", style, prefix), names=[name])
        return [f"Regenerating the caption of {name}…", gr.Timer(active=True)]

    def poll(page: float | None, selected: str) -> list[Any]:
        """The run's status line and the gallery as captions arrive; the timer stops once the run has ended."""
        run = store.captioning()
        if run is None:
            return [gr.skip(), *[gr.skip()] * len(shown), gr.skip(), gr.skip(), gr.Timer(active=False)]
        ended = not run.running
        caption = store.caption(selected) if ended and selected in run.names else gr.skip()
        return [run.line(), *show_page(page), json.dumps(store.source()), caption, gr.Timer(active=not ended)]

    @surface
    def use_demo_captioner() -> list[Any]:
        """The tiny random Florence-2 (built offline on first use, kept in the data folder's models/): its captions
        are noise, but it runs the whole auto-caption path on any machine."""
        folder = build_tiny_captioner(tiny_captioner_dir(store.settings), settings=store.settings)
        return [str(folder),
                f"Caption model: the tiny demo captioner ({TINY_CAPTIONER_NAME} in your data folder; random weights, "
                "for trying the UI). Press Auto-caption."]

    def stop() -> str:
        store.stop_captioning()
        return "Stopping auto-caption…"

    def bulk(change: Callable[[], int], page: float | None, what: str) -> list[Any]:
        changed = change()
        return [f"{what}: {changed} captions changed.", *show_page(page), json.dumps(store.source())]

    running = [controls.status, controls.timer]
    controls.start_button.click(start, settings_in, running, api_name="auto_caption")
    controls.demo_button.click(use_demo_captioner, None, [controls.model, controls.status],
                               api_name="use_demo_captioner")
    controls.regenerate_button.click(regenerate, [tab.selected, controls.model, controls.style, controls.prefix],
                                     running, api_name="regenerate_caption")
    polled = [controls.status, *shown, tab.source, tab.caption, controls.timer]
    # The timer's tick is also the API's status call (a client polls it as the page does).
    controls.timer.tick(poll, [tab.page, tab.selected], polled, api_name="caption_status", show_progress="hidden")
    controls.stop_button.click(stop, None, [controls.status], api_name="stop_caption")
    edited = [controls.status, *shown, tab.source]
    controls.replace_button.click(
        surface(lambda find, repl, page: bulk(lambda: store.replace_in_captions(find or "", repl or ""), page,
                                              "Replaced")),
        [controls.find, controls.replacement, tab.page], edited, api_name="replace_in_captions")
    controls.add_tag_button.click(
        surface(lambda tag, page: bulk(lambda: store.add_tag(tag or ""), page, f"Added {tag!r}")),
        [controls.tag, tab.page], edited, api_name="add_tag")
    controls.remove_tag_button.click(
        surface(lambda tag, page: bulk(lambda: store.remove_tag(tag or ""), page, f"Removed {tag!r}")),
        [controls.tag, tab.page], edited, api_name="remove_tag")


def format_report(report: dict[str, Any], warnings: list[str], *, dropped: list[dict[str, str]] | None = None,
                  unpaired: list[dict[str, str]] | None = None) -> str:
    """The preflight report as a person reads it; `dropped`: the clips skipped when the dataset was loaded;
    `unpaired`: the files left out of a pair when it was loaded."""
    def share(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0%}"

    lines = [
        "### Check: " + ("ready to train" if not report.get("errors") else "will not train as it is"),
        f"- **{report['images_usable']}** usable images of {report['images_found']} found"
        f" ({report['images_skipped']} files skipped)",
    ]
    lines += [f"  - skipped {count}: {reason}" for reason, count in report.get("skipped_by_reason", {}).items()]
    lines += [
        f"- Captions: {share(report['caption_coverage'])} have their own"
        + (f"; trigger word **{report['trigger_word']}**: {share(report['trigger_word_coverage'])} of captions"
           " (added where missing)" if report.get("trigger_word") else "; no trigger word"),
        f"- Sizes: width {report['width']['min']:g}–{report['width']['max']:g} px, height "
        f"{report['height']['min']:g}–{report['height']['max']:g} px; training at {report['resolution']:g}"
        f" ({report['resolution_type']})",
        f"- Schedule: {report['total_steps']} steps ({report['steps_per_epoch']} per epoch at batch size"
        f" {report['train_batch_size']})",
    ]
    lines += clip_lines(report.get("clips"), dropped=dropped or [])
    lines += pair_lines(report.get("pairs"), unpaired=unpaired or [])
    lines += goal_lines(report.get("goal"), concepts=report.get("concepts") or [])
    doctor = report.get("doctor") or []
    said = {f"{finding['message']}. Fix: {finding['fix']}" for finding in doctor}
    lines += [f"- ❌ {error}" for error in report.get("errors", []) if error not in said]
    lines += [f"- ⚠️ {warning}" for warning in dict.fromkeys([*report.get("warnings", []), *warnings])
              if warning not in said]
    lines += doctor_lines(doctor)
    return "\n".join(lines)


def goal_lines(goal: dict[str, Any] | None, *, concepts: list[dict[str, Any]]) -> list[str]:
    """The goal's choices and why, and the balance between concept folders."""
    lines = [f"- Goal **{goal['goal']}**:"] + [f"  - {reason}" for reason in goal["reasons"]] if goal else []
    if concepts:
        lines.append("- Concepts (images x passes per epoch, share of the steps):")
        lines += [f"  - {c['name']}: {c['images']} x {c['passes']} = {c['samples']} ({c['share']:.0%})"
                  for c in concepts]
    return lines


def doctor_lines(findings: list[dict[str, Any]]) -> list[str]:
    """The dataset doctor's findings with their files; 'Remove flagged images' takes the removable ones."""
    if not findings:
        return []
    lines = ["#### Dataset doctor"]
    for finding in findings:
        files = finding.get("files") or []
        shown = f" Files: {', '.join(files[:12])}{' ...' if len(files) > 12 else ''}" if files else ""
        lines.append(f"- ⚠️ {finding['message']}. **Fix:** {finding['fix']}.{shown}")
    return lines


def clip_lines(clips: dict[str, Any] | None, *, dropped: list[dict[str, str]]) -> list[str]:
    """The report's video clips: how many, their frames and length, what a sample takes, the clips skipped and why."""
    skipped = [*dropped, *(clips or {}).get("skipped", [])]
    if not clips:
        return [f"- Clips: none usable, {len(skipped)} skipped", *map(_skipped_line, skipped)] if skipped else []
    lines = [f"- Clips: **{clips['clips_usable']}** usable of {clips['clips']}, {clips['total_frames']} frames, "
             f"{clips['total_seconds']:.1f} s in all; {clips['num_frames']} frames per sample, "
             f"{clips['samples']} samples per epoch"]
    lines += [f"  - too short for {clips['min_frames']} frames: {name}" for name in clips.get("too_short", [])]
    lines += [f"  - too long (over {clips['max_frames']} frames): {name}" for name in clips.get("too_long", [])]
    return lines + [_skipped_line(item) for item in skipped]


def _skipped_line(item: dict[str, str]) -> str:
    return f"  - skipped {item['name']}: {item['reason']}" + (f" ({item['detail']})" if item.get("detail") else "")


def pair_lines(pairs: dict[str, Any] | None, *, unpaired: list[dict[str, str]]) -> list[str]:
    """The report's edit pairs: how many, inputs each, and every file left out of a pair with the reason (those the
    load left out, then those the check found)."""
    left_out = [*unpaired, *(pairs or {}).get("unpaired", [])]
    if not pairs:
        return ([f"- Edit pairs: none whole, {len(left_out)} files unpaired", *map(_unpaired_line, left_out)]
                if left_out else [])
    inputs = pairs["inputs_per_pair"]
    count = len(unpaired) + int(pairs.get("unpaired_count") or 0)
    lines = [f"- Edit pairs: **{pairs['pairs']}** ({inputs} input{'s' if inputs > 1 else ''} each, "
             f"{', '.join(f'{name}/' for name in pairs['input_folders'])}; {pairs['layout']}), {count} files unpaired"]
    return lines + [_unpaired_line(item) for item in left_out]


def _unpaired_line(item: dict[str, str]) -> str:
    return f"  - unpaired {item['name']}: {item['reason']}" + (f" ({item['detail']})" if item.get("detail") else "")
