"""The web page (Gradio Blocks) at `/`: animation and portrait editing through the same job service as the API.

Laid out like the official LivePortrait app: source tabs (image / video) and driving tabs (video / image /
template) with their crop options, the animation options, Animate / Clear, a progress bar fed by the job, both
result videos with download, and an editing tab whose sliders re-render the photo as they move.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry/version check

import gradio as gr  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from runtime.editing import EDIT_RANGES, EditParams  # noqa: E402
from runtime.options import ANIMATION_REGIONS, DRIVING_OPTIONS, AnimationOptions  # noqa: E402

from .errors import ServiceError  # noqa: E402
from .jobs import JobService  # noqa: E402
from .settings import Settings  # noqa: E402
from .uploads import sniff_extension  # noqa: E402

ASSETS = Path(__file__).resolve().parents[2] / "tests" / "assets"
EXAMPLES = (ASSETS / "source_astronaut.png", ASSETS / "driving_carphone.mp4")
DEFAULTS = AnimationOptions()
POLL_S = 0.25
OUTPUT_BUTTONS = ["download", "fullscreen"]  # no "share": nothing leaves this server
# Font stacks the browser already has: the page never fetches a web font.
THEME_FONT = ("ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif")
THEME_MONO = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")

# The option widgets of the animate form, in the order the handler receives them after the inputs.
ANIMATE_FIELDS = ("flag_do_crop", "scale", "vx_ratio", "vy_ratio", "flag_crop_driving_video",
                  "scale_crop_driving_video", "vx_ratio_crop_driving_video", "vy_ratio_crop_driving_video",
                  "flag_normalize_lip", "flag_relative_motion", "flag_pasteback", "flag_stitching",
                  "animation_region", "driving_option", "driving_multiplier", "driving_smooth_observation_variance",
                  "animal")
EDIT_FIELDS = tuple(f.name for f in dataclasses.fields(EditParams))
EDIT_STEP = {"mov_x": 0.01, "mov_y": 0.01, "mov_z": 0.01, "lip_variation_zero": 0.01, "smile": 0.01,
             "eye_ratio": 0.01, "lip_ratio": 0.01}


def theme() -> gr.themes.Base:
    return gr.themes.Base(primary_hue="indigo", font=THEME_FONT, font_mono=THEME_MONO)


def file_path(value: Any) -> str | None:
    """The uploaded file's path in an unprocessed component value (image, video or file data).

    Handlers take raw values (preprocess=False) so that our content sniffing, not an image library's exception,
    words the error for a bad upload; Gradio has already checked that the path lies in its upload folder.
    """
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        inner = value.get("video") if isinstance(value.get("video"), dict) else value
        return inner.get("path")
    return getattr(value, "path", None)


def check_upload(value: Any, role: str) -> None:
    """Say at once, in words, when an upload is not what its box expects (the type comes from the bytes)."""
    path = file_path(value)
    if path:
        try:
            sniff_extension(Path(path), role)
        except ServiceError as exc:
            raise gr.Error(exc.detail) from exc


def _pick_inputs(source_tab: str, driving_tab: str, source_image: Any, source_video: Any, driving_video: Any,
                 driving_image: Any, driving_template: Any) -> tuple[str, str]:
    """The files of the selected tabs, or a readable error saying what is missing."""
    source = file_path(source_video if source_tab == "video" else source_image)
    driving = file_path({"video": driving_video, "image": driving_image, "template": driving_template}[driving_tab])
    if not source:
        raise gr.Error(f"Upload a source {source_tab} first.")
    if not driving:
        raise gr.Error(f"Upload a driving {driving_tab} first.")
    return source, driving


def _progress_text(status: dict[str, Any]) -> str:
    if status["state"] == "queued":
        return f"queued (position {status['queue_position']})"
    return {"source": "preparing the portrait", "driving": "reading the driving motion"}.get(
        status["stage"] or "", "animating")


def run_animation(service: JobService, source: str, driving: str, options: AnimationOptions,
                  progress: gr.Progress) -> tuple[Path | None, Path | None]:
    """Submit through the job service and follow it, feeding the progress bar, until it ends (bounded)."""
    with open(source, "rb") as src, open(driving, "rb") as drv:
        try:
            job = service.submit(src, drv, options)
        except ServiceError as exc:
            raise gr.Error(exc.detail) from exc
    deadline = time.monotonic() + service.settings.job_timeout + 60
    version = -1
    while not job.final and time.monotonic() < deadline:
        status = service.describe(job)
        done, total = status["frames_done"], status["frames_total"]
        if total:
            progress((done, total), desc=_progress_text(status), unit="frames")
        else:
            progress(0.0, desc=_progress_text(status))
        version = service.wait_change(job, version, POLL_S * 4)
    if job.state != "done":
        raise gr.Error(f"Animation {job.state}: {job.error or 'no output'}")
    return job.result, job.concat


def build_blocks(service: JobService, settings: Settings) -> gr.Blocks:
    """The page; every handler calls the shared job service."""
    with gr.Blocks(title="LivePortrait (ONNX)", delete_cache=(int(max(60, settings.result_ttl / 4)),
                                                                int(settings.result_ttl))) as demo:
        gr.Markdown("# LivePortrait (ONNX Runtime)\nAnimate a portrait with a driving video, image or motion "
                    "template, or edit its expression and pose on the **Portrait editing** tab. "
                    "The same jobs over HTTP: [REST API](/docs).")
        with gr.Tab("Animation", id="animation"):
            animation_tab(service)
        with gr.Tab("Portrait editing", id="editing"):
            editing_tab(service)
    return demo


def animation_tab(service: JobService) -> None:
    """Inputs, options, Animate/Clear and the two result videos."""
    source_tab, driving_tab = gr.State("image"), gr.State("video")
    with gr.Row():
        with gr.Column():
            with gr.Tabs():
                with gr.Tab("Source image") as tab_si:
                    source_image = gr.Image(type="filepath", label="Source image", elem_id="source-image")
                with gr.Tab("Source video") as tab_sv:
                    source_video = gr.Video(label="Source video", elem_id="source-video")
            tab_si.select(lambda: "image", None, source_tab)
            tab_sv.select(lambda: "video", None, source_tab)
            with gr.Accordion("Cropping options for the source", open=True), gr.Row():
                do_crop = gr.Checkbox(DEFAULTS.flag_do_crop, label="do crop (source)")
                scale = gr.Number(DEFAULTS.scale, label="source crop scale", minimum=1.8, maximum=3.2, step=0.05)
                vx = gr.Number(DEFAULTS.vx_ratio, label="source crop x", minimum=-0.5, maximum=0.5, step=0.01)
                vy = gr.Number(DEFAULTS.vy_ratio, label="source crop y", minimum=-0.5, maximum=0.5, step=0.01)
        with gr.Column():
            with gr.Tabs():
                with gr.Tab("Driving video") as tab_dv:
                    driving_video = gr.Video(label="Driving video", elem_id="driving-video")
                with gr.Tab("Driving image") as tab_di:
                    driving_image = gr.Image(type="filepath", label="Driving image", elem_id="driving-image")
                with gr.Tab("Driving template") as tab_dt:
                    driving_template = gr.File(label="Motion template (.npz)", file_types=[".npz"],
                                               elem_id="driving-template")
            tab_dv.select(lambda: "video", None, driving_tab)
            tab_di.select(lambda: "image", None, driving_tab)
            tab_dt.select(lambda: "template", None, driving_tab)
            with gr.Accordion("Cropping options for the driving video", open=True), gr.Row():
                crop_driving = gr.Checkbox(DEFAULTS.flag_crop_driving_video, label="do crop (driving)")
                d_scale = gr.Number(DEFAULTS.scale_crop_driving_video, label="driving crop scale", minimum=1.8,
                                    maximum=3.2, step=0.05)
                d_vx = gr.Number(DEFAULTS.vx_ratio_crop_driving_video, label="driving crop x", minimum=-0.5,
                                 maximum=0.5, step=0.01)
                d_vy = gr.Number(DEFAULTS.vy_ratio_crop_driving_video, label="driving crop y", minimum=-0.5,
                                 maximum=0.5, step=0.01)
    with gr.Accordion("Animation options", open=True):
        with gr.Row():
            normalize_lip = gr.Checkbox(DEFAULTS.flag_normalize_lip, label="normalize lip")
            relative = gr.Checkbox(DEFAULTS.flag_relative_motion, label="relative motion")
            pasteback = gr.Checkbox(DEFAULTS.flag_pasteback, label="paste-back")
            stitching = gr.Checkbox(DEFAULTS.flag_stitching, label="stitching")
            animal = gr.Checkbox(DEFAULTS.animal, label="animal (cat/dog photo)", elem_id="animal")
        with gr.Row():
            region = gr.Radio(list(ANIMATION_REGIONS), value=DEFAULTS.animation_region, label="animation region")
            driving_option = gr.Radio(list(DRIVING_OPTIONS), value=DEFAULTS.driving_option, label="driving option")
            multiplier = gr.Number(DEFAULTS.driving_multiplier, label="driving multiplier", minimum=0.0,
                                   maximum=2.0, step=0.02)
            smooth = gr.Number(DEFAULTS.driving_smooth_observation_variance, label="motion smooth strength (v2v)",
                               minimum=1e-11, maximum=1e-2, step=1e-8)
    with gr.Row():
        animate = gr.Button("Animate", variant="primary", elem_id="animate")
        clear = gr.ClearButton(value="Clear", elem_id="clear")
    with gr.Row():
        with gr.Column():
            out_video = gr.Video(label="Animated (pasted back)", elem_id="result-video", buttons=["download"],
                                 interactive=False)
            out_image = gr.Image(label="Animated (pasted back)", visible=False, elem_id="result-image",
                                 interactive=False, buttons=OUTPUT_BUTTONS)
        with gr.Column():
            out_concat = gr.Video(label="Driving | source | result", elem_id="concat-video", buttons=["download"],
                                  interactive=False)
            out_concat_image = gr.Image(label="Driving | source | result", visible=False, interactive=False,
                                        buttons=OUTPUT_BUTTONS)
    clear.add([source_image, source_video, driving_video, driving_image, driving_template, out_video, out_concat,
               out_image, out_concat_image])
    if all(p.is_file() for p in EXAMPLES):
        gr.Examples([[str(EXAMPLES[0]), str(EXAMPLES[1])]], inputs=[source_image, driving_video],
                    label="Examples (tests/assets)", cache_examples=False)

    widgets = [do_crop, scale, vx, vy, crop_driving, d_scale, d_vx, d_vy, normalize_lip, relative, pasteback,
               stitching, region, driving_option, multiplier, smooth, animal]

    for box, role in ((source_image, "source"), (source_video, "source"), (driving_video, "driving"),
                      (driving_image, "driving"), (driving_template, "driving")):
        box.upload(lambda value, role=role: check_upload(value, role), box, None, preprocess=False,
                   api_visibility="private")

    def on_animate(s_tab: str, d_tab: str, s_img: Any, s_vid: Any, d_vid: Any, d_img: Any, d_tpl: Any,
                   *values: Any, progress: gr.Progress = gr.Progress()):
        source, driving = _pick_inputs(s_tab, d_tab, s_img, s_vid, d_vid, d_img, d_tpl)
        try:
            options = DEFAULTS.replace(**dict(zip(ANIMATE_FIELDS, values, strict=True)))
        except (ValueError, TypeError) as exc:
            raise gr.Error(f"Invalid option: {exc}") from exc
        main, concat = run_animation(service, source, driving, options, progress)
        still = main is not None and main.suffix == ".jpg"
        return (gr.Video(value=None if still else main, visible=not still),
                gr.Video(value=None if still else concat, visible=not still),
                gr.Image(value=main if still else None, visible=still),
                gr.Image(value=concat if still else None, visible=still))

    animate.click(on_animate, [source_tab, driving_tab, source_image, source_video, driving_video, driving_image,
                               driving_template, *widgets], [out_video, out_concat, out_image, out_concat_image],
                  concurrency_limit=None, api_visibility="private", preprocess=False)


def editing_tab(service: JobService) -> None:
    """A photo, one slider per EditParams field, Reset; the picture follows the last slider value."""
    defaults = EditParams()
    with gr.Row():
        with gr.Column():
            photo = gr.Image(type="filepath", label="Photo to edit", elem_id="edit-source")
            paste_back = gr.Checkbox(True, label="paste-back")
            reset_button = gr.Button("Reset", elem_id="edit-reset")
        with gr.Column():
            result = gr.Image(type="numpy", label="Edited", interactive=False, elem_id="edit-result",
                              format="png", buttons=OUTPUT_BUTTONS)
    sliders = []
    with gr.Row():
        for name in EDIT_FIELDS:
            low, high = EDIT_RANGES[name]
            value = getattr(defaults, name)
            sliders.append(gr.Slider(low, high, value=low if value is None else value, label=name.replace("_", " "),
                                     step=EDIT_STEP.get(name, 0.5), elem_id=f"edit-{name.replace('_', '-')}",
                                     min_width=220))

    def render(photo_value: Any, paste: bool, *values: float) -> Any:
        path = file_path(photo_value)
        if not path:
            return None
        params = EditParams(**dict(zip(EDIT_FIELDS, values, strict=True)))
        try:
            with open(path, "rb") as fh:
                return service.edit(fh, params, paste)
        except ServiceError as exc:
            raise gr.Error(exc.detail) from exc

    def reset(photo_value: Any, paste: bool) -> list[Any]:
        """Sliders at values that reproduce the photo (its own eye/lip ratios, no other edit), and that render."""
        path = file_path(photo_value)
        if not path:
            return [gr.Slider() for _ in sliders] + [None]
        try:
            with open(path, "rb") as fh:
                editor = service.editor_for(fh)
        except ServiceError as exc:
            raise gr.Error(exc.detail) from exc
        values = dataclasses.asdict(defaults) | {"eye_ratio": round(float(editor.source_eye_ratio), 2),
                                                  "lip_ratio": round(float(editor.source_lip_ratio), 2)}
        ordered = [values[name] for name in EDIT_FIELDS]
        return [*ordered, render(path, paste, *ordered)]

    # .input fires while the user drags (not for values set by reset); always_last drops renders gone stale
    photo.upload(reset, [photo, paste_back], [*sliders, result], api_visibility="private", preprocess=False)
    reset_button.click(reset, [photo, paste_back], [*sliders, result], api_visibility="private", preprocess=False)
    gr.on([s.input for s in sliders] + [paste_back.input], render, [photo, paste_back, *sliders], result,
          trigger_mode="always_last", show_progress="hidden", api_visibility="private", preprocess=False)


def mount_ui(app: FastAPI, service: JobService, settings: Settings, work_dir: Path) -> FastAPI:
    """Mount the page at `/`; Gradio's uploads and copies live in the work folder, outputs may come from jobs."""
    os.environ.setdefault("GRADIO_TEMP_DIR", str(work_dir / "ui"))
    blocks = build_blocks(service, settings)
    auth = None
    if settings.api_key:
        import secrets

        key = settings.api_key

        def auth(_user: str, password: str) -> bool:
            return secrets.compare_digest(password.encode(), key.encode())

    return gr.mount_gradio_app(app, blocks, path="/", allowed_paths=[str(service.jobs_dir), str(ASSETS)],
                               show_error=True, max_file_size=settings.max_upload_bytes, ssr_mode=False,
                               mcp_server=False, pwa=False, theme=theme(), auth=auth,
                               auth_message="Log in with any user name and the server's API key as password.",
                               footer_links=[])
