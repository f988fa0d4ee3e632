#!/usr/bin/env python3
"""liveportrait-onnx command line: animate (default) | export | bench | doctor | serve.

    python cli.py -s photo.jpg -d driving.mp4          # animate: writes animations/photo--driving.mp4
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

SUBCOMMANDS = ("animate", "export", "bench", "doctor", "serve")

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
    "crf": "H.264 constant rate factor of the output (lower = better)",
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
               "audio_priority": opt.AUDIO_PRIORITIES}
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
                        help="source portrait: image (all faces are animated) or video (video->video)")
    parser.add_argument("-d", "--driving", required=True, type=Path,
                        help="driving video, driving image, or motion template (.npz ours; .pkl with --trust-pickle)")
    parser.add_argument("-o", "--output-dir", type=Path, default=Path("animations"),
                        help="output folder (default: animations/)")
    parser.add_argument("--models", type=Path, default=Path("models_onnx"),
                        help="folder of exported graphs + manifest.json (default: models_onnx/)")
    parser.add_argument("--device", default="auto",
                        choices=["auto", "cuda", "tensorrt", "coreml", "openvino", "directml", "cpu"],
                        help="execution device; auto = CUDA, then CoreML, then CPU (default: auto)")
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
    parser.add_argument("--face-index", type=int, default=None,
                        help="animate only this source face, 0 = largest (default: every face in the photo)")
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


def run_animate(args: argparse.Namespace) -> int:
    """Animate and report; exit 0 only when the output files were written."""
    from runtime.api import AnimationError, LivePortrait, MediaError
    from runtime.manifest import ModelsError
    from runtime.options import AnimationOptions
    from runtime.providers import DeviceError

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(AnimationOptions)}
    try:
        options = AnimationOptions(**values)
        engine = LivePortrait(args.models, device=args.device, precision=args.precision, threads=args.threads,
                              coreml_units=args.coreml_units, strict_device=args.strict_device,
                              cuda_graph_batch=(args.batch_size or 8) if args.cuda_graph else 0)
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
    sub = parser.add_subparsers(dest="command", metavar="{animate,export,bench,doctor,serve}")
    animate = sub.add_parser("animate", help="animate a portrait with a driving video/image/template (default)",
                             formatter_class=_DefaultsFormatter)
    build_animate_parser(animate)
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
        from runtime.server import add_arguments, run

        add_arguments(serve)
        args = parser.parse_args(argv)
        if "ensure_models" in globals():  # exports on first run, or stops with the fix
            globals()["ensure_models"](args.models, args.weights, args.auto_export)
        return run(args)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return run_animate(args)


if __name__ == "__main__":
    sys.exit(main())
