#!/usr/bin/env python3
"""liveportrait-onnx command line: animate (default) | edit | export | bench | doctor | serve.

    python cli.py -s photo.jpg -d driving.mp4          # animate: writes animations/photo--driving.mp4
    python cli.py edit -s photo.jpg --yaw 10 --smile 0.5  # edit: writes animations/photo--edit.png
    python cli.py export --weights pretrained_weights  # official checkpoints -> models_onnx/
    python cli.py bench                                 # per-stage timings and ratios vs PyTorch
    python cli.py doctor                                # what this machine can run, and how fast
    python cli.py serve                                 # web page + REST API on http://127.0.0.1:8890
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

SUBCOMMANDS = ("animate", "edit", "export", "bench", "doctor", "serve")

# The checkpoints `cli.py export` reads, relative to the weights folder (kept torch-free here; a test checks them
# against export/).
WEIGHT_FILES = (
    "liveportrait/base_models/appearance_feature_extractor.pth",
    "liveportrait/base_models/motion_extractor.pth",
    "liveportrait/base_models/warping_module.pth",
    "liveportrait/base_models/spade_generator.pth",
    "liveportrait/retargeting_models/stitching_retargeting_module.pth",
    "liveportrait/landmark.onnx",
    "insightface/models/buffalo_l/det_10g.onnx",
    "insightface/models/buffalo_l/2d106det.onnx",
)

# The animal export's inputs (`cli.py export --family liveportrait_animals`): the animal base models, X-Pose, the
# human stitching MLP and the face graphs that crop the (human) driving video.
ANIMAL_WEIGHT_FILES = (
    "liveportrait_animals/base_models_v1.1/appearance_feature_extractor.pth",
    "liveportrait_animals/base_models_v1.1/motion_extractor.pth",
    "liveportrait_animals/base_models_v1.1/warping_module.pth",
    "liveportrait_animals/base_models_v1.1/spade_generator.pth",
    "liveportrait_animals/xpose.pth",
    "liveportrait/retargeting_models/stitching_retargeting_module.pth",
    "liveportrait/landmark.onnx",
    "insightface/models/buffalo_l/det_10g.onnx",
    "insightface/models/buffalo_l/2d106det.onnx",
)

# Help for each animation option (names are the runtime's AnimationOptions fields).
OPTION_HELP = {
    "flag_relative_motion": "relative motion: the driving motion is applied relative to its first frame",
    "flag_stitching": "stitching network, keeps the shoulders/background aligned for paste-back",
    "flag_eye_retargeting": "eye retargeting from the driving eye-open ratio",
    "flag_lip_retargeting": "lip retargeting from the driving lip-open ratio",
    "flag_normalize_lip": "close the source's open mouth before animating",
    "lip_normalize_threshold": "lip-open ratio above which --normalize-lip acts",
    "flag_source_video_eye_retargeting": "video->video: retarget the source eyes to the first driving frame's",
    "source_video_eye_retargeting_threshold": "eye-open threshold for --source-video-eye-retargeting",
    "flag_video_editing_head_rotation": "kept for configuration compatibility (no effect, as upstream today)",
    "animation_region": "which motion to transfer",
    "driving_option": "expression-friendly scales driving motion to the source face; pose-friendly does not",
    "driving_multiplier": "multiplies the transferred motion",
    "driving_smooth_observation_variance": "video->video Kalman smoothing: smaller = smoother",
    "flag_pasteback": "paste the animated face back into the full source frame",
    "output_fps": "fps when the driving input has none (image or template without fps)",
    "crf": "H.264 constant rate factor of the output (lower = better; 18 is what the official writer uses)",
    "flag_concat_source_512": "concat video: show the sharp 512x512 source crop in the middle panel instead of the "
                              "official upscaled 256x256 network input",
    "audio_priority": "video->video: whose audio track the output carries",
    "flag_do_crop": "crop the source face before animating",
    "flag_do_rot": "align the source crop's rotation to the face",
    "det_thresh": "face detector score threshold",
    "scale": "source crop scale (face size in the crop)",
    "vx_ratio": "source crop horizontal shift",
    "vy_ratio": "source crop vertical shift",
    "source_max_dim": "downscale sources larger than this (pixels, 0 = never)",
    "source_division": "source sides are made multiples of this",
    "flag_crop_driving_video": "crop the driving video's face (use for driving videos that are not face crops)",
    "scale_crop_driving_video": "driving crop scale",
    "vx_ratio_crop_driving_video": "driving crop horizontal shift",
    "vy_ratio_crop_driving_video": "driving crop vertical shift",
    "animal": "animate a pet (cat, dog) photo with the liveportrait_animals models: X-Pose finds the animal's face "
              "(models in <--models>/liveportrait_animals/)",
    "animal_face_type": "X-Pose keypoint set the animal crop is cut on: 9 points (eyes, nose, mouth) or 68",
    "animal_min_score": "X-Pose score under which the photo counts as showing no animal face (0 = always take the "
                        "best candidate, as upstream)",
}
# Short aliases users know from the issue tracker / upstream docs.
ALIASES = {"flag_pasteback": ["--no-paste-back"], "flag_crop_driving_video": ["--crop-driving"]}


def _flag(name: str) -> str:
    return name.removeprefix("flag_").replace("_", "-")


def add_animation_options(parser: argparse.ArgumentParser) -> None:
    """One CLI option per AnimationOptions field, defaults and choices taken from the dataclass itself."""
    from runtime import options as opt

    group = parser.add_argument_group("animation options (official defaults)")
    choices = {"animation_region": opt.ANIMATION_REGIONS, "driving_option": opt.DRIVING_OPTIONS,
               "audio_priority": opt.AUDIO_PRIORITIES, "animal_face_type": opt.ANIMAL_FACE_TYPES}
    for field in dataclasses.fields(opt.AnimationOptions):
        default = field.default
        text = OPTION_HELP.get(field.name, field.name.replace("_", " "))
        if isinstance(default, bool):
            names = [f"--no-{_flag(field.name)}"] if default else [f"--{_flag(field.name)}"]
            names += [a for a in ALIASES.get(field.name, []) if a.startswith("--no-") == default]
            group.add_argument(*names, dest=field.name, action="store_false" if default else "store_true",
                               default=default, help=f"{'disable' if default else 'enable'}: {text} "
                                                     f"(default: {'on' if default else 'off'})")
        else:
            kind = type(default)
            group.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=kind, default=default,
                               choices=choices.get(field.name), help=f"{text} (default: {default})")


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Append "(default: X)" only where the help text does not already state the default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.required or action.default in (None, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def build_animate_parser(parser: argparse.ArgumentParser) -> None:
    """Inputs, outputs, device and every animation option."""
    parser.add_argument("-s", "--source", required=True, type=Path,
                        help="source portrait: image (its largest face is animated; see --all-faces) or video "
                             "(video->video); a cat or dog photo with --animal")
    parser.add_argument("-d", "--driving", required=True, type=Path,
                        help="driving video, driving image, or motion template (.npz ours; .pkl with --trust-pickle)")
    parser.add_argument("-o", "--output-dir", type=Path, default=Path("animations"),
                        help="output folder (default: animations/)")
    add_model_arguments(parser)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16"],
                        help="graph precision; auto = fp16 variants on GPUs when exported, else fp32 (default: auto)")
    parser.add_argument("--coreml-units", default=None,
                        choices=["ALL", "CPUAndGPU", "CPUAndNeuralEngine", "CPUOnly"],
                        help="CoreML compute units (default: ALL, from platforms/macos-arm64/providers.json)")
    parser.add_argument("--strict-device", action="store_true",
                        help="fail if any node of a network graph would fall back to the CPU (GPU/CoreML checks)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="CUDA only: run warping + decoder at a fixed batch (--batch-size, default 8) captured "
                             "as a CUDA graph; fewer kernel launches per frame")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per graph (default: 0 = onnxruntime's choice, one per core)")
    faces = parser.add_mutually_exclusive_group()
    faces.add_argument("--face-index", type=int, default=0,
                       help="animate this source face, 0 = the largest, as the official pipeline (default: 0)")
    faces.add_argument("--all-faces", dest="face_index", action="store_const", const=None,
                       help="animate every face of a source photo, each pasted back in place")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="driving frames per graph call (default: 0 = per-device default)")
    parser.add_argument("--save-template", type=Path, default=None,
                        help="also write the driving motion as a reusable .npz template to this path (default: none)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow reading upstream .pkl templates (pickle can run code: only trusted files)")
    parser.add_argument("--no-concat", action="store_true",
                        help="do not write the <source>--<driving>_concat.mp4 side-by-side video")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_animation_options(parser)


def _exporter():
    """A callable that exports in a child process when the exporter (and so PyTorch) is installed, else None."""
    import importlib.util

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("export.export_all") is None:
        return None
    return export_in_child


def export_in_child(weights: Path, out: Path, family: str = "liveportrait", log=print) -> None:
    """`cli.py export` in a child process: the exporter's PyTorch modules, traces and parity runs (several GB)
    are returned to the system when it exits instead of staying in the animating process's peak memory."""
    import subprocess

    from runtime.manifest import ModelsError

    del log  # the child writes its progress to this process's stderr itself
    command = [sys.executable, str(Path(__file__).resolve()), "export", "--family", family,
               "--weights", str(weights), "--out", str(out)]
    try:
        progress = sys.stderr.fileno()  # the child's progress lines go where ours do
    except (AttributeError, OSError, ValueError):
        progress = None
    done = subprocess.run(command, stdout=progress, check=False)
    if done.returncode != 0:
        raise ModelsError(f"automatic export from {weights}/ failed: `python {' '.join(command[1:])}` exited with "
                          f"status {done.returncode} (its message is above)")


def ensure_models(models_dir: Path, weights_dir: Path, auto_export: bool, animal: bool = False) -> None:
    """First run: export models_dir from weights_dir when it has no manifest yet, or raise ModelsError saying how.

    Exports only when every checkpoint is present, the exporter (PyTorch) is importable and auto_export is on;
    progress goes to stderr. ``animal``: the same for the animal export in models_dir/liveportrait_animals/.
    """
    from runtime.manifest import ANIMAL_FAMILY, MANIFEST_NAME, ModelsError

    models_dir, weights_dir = Path(models_dir), Path(weights_dir)
    family = "liveportrait"
    if animal:
        from runtime.animal.animator import animal_models_dir

        models_dir, family = animal_models_dir(models_dir), ANIMAL_FAMILY
    if (models_dir / MANIFEST_NAME).is_file():
        return
    family_flag = f" --family {family}" if animal else ""
    export_cmd = f"python cli.py export{family_flag} --weights {weights_dir} --out {models_dir}"
    head = f"models folder {models_dir} has no {MANIFEST_NAME} (nothing exported yet)"
    missing = [f for f in (ANIMAL_WEIGHT_FILES if animal else WEIGHT_FILES) if not (weights_dir / f).is_file()]
    if missing:
        what = "LivePortrait animal weights (liveportrait_animals/ and X-Pose's xpose.pth)" if animal else \
            "LivePortrait weights"
        raise ModelsError(
            f"{head}, and {weights_dir}/ lacks {len(missing)} checkpoint file(s) to export them from: "
            f"{', '.join(missing)}.\nPut the official {what} there (or random test weights: "
            f"python -m export.fixtures --out {weights_dir}), then run: {export_cmd}")
    export_models = _exporter()
    if export_models is None:
        raise ModelsError(f"{head}. The checkpoints in {weights_dir}/ are there, but exporting needs PyTorch "
                          f"(pip install torch). Then run: {export_cmd}")
    if not auto_export:
        raise ModelsError(f"{head} (--no-auto-export). Run: {export_cmd}")
    print(f"{head}: exporting the ONNX graphs from {weights_dir}/ first (once; takes a few minutes) ...",
          file=sys.stderr)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    export_models(weights_dir, models_dir, family=family, log=log)  # the child's failure is a ModelsError
    if not (models_dir / MANIFEST_NAME).is_file():
        raise ModelsError(f"automatic export finished without writing {models_dir / MANIFEST_NAME}")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--models, --weights, --no-auto-export, --device: where the graphs come from and where they run."""
    parser.add_argument("--models", type=Path, default=Path("models_onnx"),
                        help="folder of exported graphs + manifest.json (default: models_onnx/)")
    parser.add_argument("--weights", type=Path, default=Path("pretrained_weights"),
                        help="checkpoints to export from on the first run, when --models has no manifest.json "
                             "(default: pretrained_weights/)")
    parser.add_argument("--no-auto-export", dest="auto_export", action="store_false",
                        help="never export automatically; fail with the commands to run instead (default: export when "
                             "the manifest is missing and the weights are there)")
    parser.add_argument("--device", default="auto",
                        choices=["auto", "cuda", "tensorrt", "coreml", "openvino", "directml", "cpu"],
                        help="execution device; auto = CUDA, then CoreML, then the CPU's fastest route: OpenVINO "
                             "with a bf16 decoder on CPUs with AMX/AVX512-BF16 when installed and exported, else "
                             "onnxruntime fp32 (`cli.py doctor` says which and why; cpu = always onnxruntime fp32) "
                             "(default: auto)")


def build_edit_parser(parser: argparse.ArgumentParser) -> None:
    """Photo, output, models and one option per EditParams slider (ranges and defaults from runtime.editing)."""
    from runtime.editing import EDIT_CROP_SCALE, EDIT_HELP, EDIT_RANGES, EditParams

    parser.add_argument("-s", "--source", required=True, type=Path, help="the portrait photo to edit")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="output image, .png or .jpg (default: animations/<source>--edit.png)")
    parser.add_argument("--no-paste-back", dest="paste_back", action="store_false",
                        help="write the 512x512 face crop instead of the whole photo (default: the whole photo)")
    add_model_arguments(parser)
    parser.add_argument("--face-index", type=int, default=0, help="which face to edit, 0 = largest (default: 0)")
    parser.add_argument("--scale", type=float, default=EDIT_CROP_SCALE,
                        help=f"face crop scale (default: {EDIT_CROP_SCALE}, the official editing panel's)")
    parser.add_argument("--no-stitching", dest="stitching", action="store_false",
                        help="skip the stitching network, shoulders may then not line up with the photo (default: "
                             "stitching on)")
    group = parser.add_argument_group("sliders (the official retargeting panel's ranges)")
    for field in dataclasses.fields(EditParams):
        low, high = EDIT_RANGES[field.name]
        default = "the photo's own" if field.default is None else f"{field.default:g}"
        text = EDIT_HELP[field.name].split(" (default")[0]
        group.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=float, default=field.default,
                           metavar="X", help=f"{text} [{low:g}, {high:g}] (default: {default})")


def run_edit(args: argparse.Namespace) -> int:
    """Edit one photo and write the image atomically; exit 2 for a slider out of range, 1 for other failures."""
    from runtime.api import AnimationError, LivePortrait, MediaError
    from runtime.editing import EditParams
    from runtime.manifest import ModelsError
    from runtime.media import write_image_rgb
    from runtime.options import AnimationOptions
    from runtime.providers import DeviceError

    try:
        params = EditParams(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EditParams)})
        options = AnimationOptions(scale=args.scale, flag_stitching=args.stitching)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    output = args.output or Path("animations") / f"{args.source.stem}--edit.png"
    try:
        ensure_models(args.models, args.weights, args.auto_export)
        engine = LivePortrait(args.models, device=args.device)
        editor = engine.portrait_editor(args.source, options=options, face_index=args.face_index)
        path = write_image_rgb(output, editor.render(params, paste_back=args.paste_back))
    except (AnimationError, MediaError, ModelsError, DeviceError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def run_animate(args: argparse.Namespace) -> int:
    """Animate and report; exit 0 only when the output files were written."""
    from runtime.api import AnimationError, LivePortrait, MediaError
    from runtime.manifest import ModelsError
    from runtime.options import AnimationOptions
    from runtime.providers import DeviceError

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(AnimationOptions)}
    try:
        options = AnimationOptions(**values)
        ensure_models(args.models, args.weights, args.auto_export, animal=options.animal)
        engine = LivePortrait(args.models, device=args.device, precision=args.precision, threads=args.threads,
                              coreml_units=args.coreml_units, strict_device=args.strict_device,
                              cuda_graph_batch=(args.batch_size or 8) if args.cuda_graph else 0,
                              animal=options.animal)
        result = engine.animate(
            args.source, args.driving, options=options, output_dir=args.output_dir, face_index=args.face_index,
            batch_size=args.batch_size, save_template=args.save_template, trust_pickle=args.trust_pickle,
            write_concat=not args.no_concat, progress=not args.quiet,
        )
    except (AnimationError, MediaError, ModelsError, DeviceError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in result.paths:
        print(f"wrote {path}")
    for line in result.warnings:
        print(f"warning: {line}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "animate")
    parser = argparse.ArgumentParser(
        prog="cli.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="{animate,edit,export,bench,doctor,serve}")
    animate = sub.add_parser("animate", help="animate a portrait with a driving video/image/template (default)",
                             formatter_class=_DefaultsFormatter)
    build_animate_parser(animate)
    edit = sub.add_parser("edit", help="edit a portrait with sliders: head pose, eyes, lips, smile, gaze",
                          formatter_class=_DefaultsFormatter)
    export = sub.add_parser("export", help="export official checkpoints to verified ONNX graphs")
    bench = sub.add_parser("bench", help="time every stage and compare with the PyTorch reference")
    doctor = sub.add_parser("doctor", help="check the install, providers, models and per-provider placement")
    serve = sub.add_parser("serve", help="web page and REST API (FastAPI + Gradio) on one job queue")
    if not argv:
        parser.print_help()
        return 2
    if argv[0] in ("-h", "--help"):  # animate is the default command: show its options too
        parser.print_help()
        print("\nanimate options (used when no command is given):\n")
        animate.print_help()
        return 0
    command = argv[0]
    if command == "edit":
        build_edit_parser(edit)
        return run_edit(parser.parse_args(argv))
    if command == "export":
        from export.export_all import add_arguments, run

        add_arguments(export)
        return run(parser.parse_args(argv))
    if command == "bench":
        from runtime.bench import add_arguments, run

        add_arguments(bench)
        return run(parser.parse_args(argv))
    if command == "doctor":
        from runtime.doctor import add_arguments, run

        add_arguments(doctor)
        return run(parser.parse_args(argv))
    if command == "serve":
        from runtime.manifest import ModelsError
        from runtime.server import add_arguments, run

        add_arguments(serve)
        args = parser.parse_args(argv)
        try:
            ensure_models(args.models, args.weights, args.auto_export)  # first run: export, or say how
        except ModelsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return run(args)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return run_animate(args)


if __name__ == "__main__":
    sys.exit(main())
