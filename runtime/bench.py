"""`python cli.py bench`: per-stage timings of the ONNX engine next to the PyTorch reference, in one run.

Both sides get the same inputs (the motion graph's own keypoints, the appearance graph's own feature volume), the
same batch and the same device; times are per frame (call time / batch), medians and p90 over repeats. torch is
imported only when the comparison runs, so the bench works on a runtime-only install. `--tune` measures CPU
session options (threads, execution mode, optimisation level, batch) on the motion and warping graphs.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the torch side lives in export/ and is imported only when a comparison runs
    from export.torch_reference import TorchReference

ASSETS = Path(__file__).resolve().parents[1] / "tests" / "assets"
NET_STAGES = ("motion", "appearance", "stitching", "warp_decode", "motion+warp+decode")
STAGES = ("detection", "landmarks", *NET_STAGES, "paste_back", "decode", "encode", "image_to_video",
          "video_to_video", "xpose")
PER_IMAGE_STAGES = ("detection", "landmarks", "paste_back", "decode", "encode", "image_to_video", "video_to_video",
                    "xpose")
E2E_STAGES = ("image_to_video", "video_to_video")
TUNE_GRAPHS = {"motion": "motion_extractor", "appearance": "appearance_feature_extractor",
               "warp_decode": "warping_spade"}


# ------------------------------------------------------------------------------------------------ measuring
@dataclass
class Timing:
    """One table row: per-frame milliseconds of our engine (and of torch when measured) for a stage and batch."""

    stage: str
    batch: int
    ours: list[float] = field(default_factory=list)  # ms per frame, one value per repeat
    torch: list[float] = field(default_factory=list)
    torch_compiled: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def key(self) -> str:
        return self.stage if self.batch == 1 or self.stage in PER_IMAGE_STAGES else f"{self.stage}@b{self.batch}"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"batch": self.batch, "unit": "ms/frame", "repeats": len(self.ours)}
        for name, values in (("ours", self.ours), ("torch", self.torch), ("torch_compile", self.torch_compiled)):
            if values:
                out[f"{name}_ms"] = median(values)
                out[f"{name}_p90_ms"] = p90(values)
        if self.stage in E2E_STAGES and self.ours:
            out["fps"] = 1000.0 / median(self.ours)
        if self.note:
            out["note"] = self.note
        return out

    def ratio(self) -> float | None:
        """torch ms / ours ms (above 1: we are faster)."""
        if not self.ours or not self.torch:
            return None
        return median(self.torch) / median(self.ours)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def p90(values: Sequence[float]) -> float:
    """90th percentile, linear interpolation between order statistics (the median of one value is itself)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), 90))


def time_per_frame(fn: Callable[[], object], batch: int, repeats: int, warmup: int,
                   sync: Callable[[], None] | None = None) -> list[float]:
    """Milliseconds per frame of `fn` (which processes `batch` frames), one value per repeat after warm-up."""
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        out.append((time.perf_counter() - start) * 1000.0 / batch)
    return out


# ------------------------------------------------------------------------------------------------ inputs
def synthetic_faces(n: int, size: int = 256, seed: int = 0) -> np.ndarray:
    """N×size×size×3 uint8 smooth portrait-like images (bright oval on a blurred background): no data files."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    oval = np.exp(-(((xx - 0.5) / 0.22) ** 2 + ((yy - 0.48) / 0.3) ** 2))[..., None]
    out = []
    for _ in range(n):
        back = cv2.resize(rng.random((6, 6, 3), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
        img = 0.45 * back + 0.6 * oval * np.array([0.85, 0.65, 0.55], np.float32)
        img += rng.normal(0.0, 0.03, img.shape).astype(np.float32)
        out.append(np.clip(img * 255.0, 0, 255).astype(np.uint8))
    return np.stack(out)


@dataclass
class NetInputs:
    """Inputs shared by both engines at one batch size (from our own graphs, so they are in realistic ranges)."""

    images: np.ndarray  # N×256×256×3 uint8 (driving crops)
    source: np.ndarray  # 1×256×256×3 uint8
    feature: np.ndarray  # 1×32×16×64×64 float32
    kp_source: np.ndarray  # 1×21×3
    kp_driving: np.ndarray  # N×21×3
    stitch_feat: np.ndarray  # N×126
    eye_feat: np.ndarray  # N×66
    lip_feat: np.ndarray  # N×65


def make_net_inputs(stages: Any, batch: int, seed: int = 0) -> NetInputs:
    """Run our motion / appearance graphs once to get keypoints and a feature volume for the batch."""
    from runtime.motion import transform_keypoints

    images = synthetic_faces(batch, seed=seed)
    source = synthetic_faces(1, seed=seed + 100)
    kp_source = transform_keypoints(stages.motion(source))
    kp_driving = transform_keypoints(stages.motion(images))
    feature = np.asarray(stages.appearance(source).numpy(), dtype=np.float32)
    rng = np.random.default_rng(seed)
    src_flat = np.repeat(kp_source.reshape(1, -1), batch, axis=0)
    eye = rng.uniform(0.1, 0.5, (batch, 3)).astype(np.float32)
    lip = rng.uniform(0.0, 0.4, (batch, 2)).astype(np.float32)
    return NetInputs(
        images=images, source=source, feature=feature, kp_source=kp_source, kp_driving=kp_driving,
        stitch_feat=np.concatenate([src_flat, kp_driving.reshape(batch, -1)], axis=1).astype(np.float32),
        eye_feat=np.concatenate([src_flat, eye], axis=1), lip_feat=np.concatenate([src_flat, lip], axis=1))


# ------------------------------------------------------------------------------------------------ our engine
def ours_net_calls(stages: Any, x: NetInputs) -> dict[str, Callable[[], object]]:
    """The network stages of our engine, numpy in → numpy out (as the pipeline calls them)."""
    from runtime.motion import apply_stitching, transform_keypoints

    feature = stages.appearance(x.source)  # stays on the GPU under CUDA, like in the pipeline

    def mlps() -> None:
        stages.stitching(x.stitch_feat)
        stages.eye(x.eye_feat)
        stages.lip(x.lip_feat)

    def per_frame() -> np.ndarray:
        kp_d = transform_keypoints(stages.motion(x.images))
        kp_d = apply_stitching(stages.stitching, x.kp_source, kp_d)
        return stages.warp_decode(feature, x.kp_source, kp_d)

    return {
        "motion": lambda: stages.motion(x.images),
        "appearance": lambda: stages.appearance(x.images),
        "stitching": mlps,
        "warp_decode": lambda: stages.warp_decode(feature, x.kp_source, x.kp_driving),
        "motion+warp+decode": per_frame,
    }


def face_calls(models: Any, image_rgb: np.ndarray) -> dict[str, Callable[[], object]]:
    """Detection on a 512² image and the 106 → 203 landmark chain on the face it finds (or a centred box)."""
    from runtime.face_analysis import FaceAnalyzer

    runner = models.runner
    analyzer = FaceAnalyzer(runner("det_10g").session, runner("2d106det").session, runner("landmark").session)
    found = analyzer.detector.detect(image_rgb)
    h, w = image_rgb.shape[:2]
    bbox = found[0].bbox if found else np.array([0.3 * w, 0.2 * h, 0.7 * w, 0.8 * h], np.float32)

    def landmarks() -> np.ndarray:
        return analyzer.lmk203.predict(image_rgb, analyzer.lmk106.predict(image_rgb, bbox))

    return {"detection": lambda: analyzer.detector.detect(image_rgb), "landmarks": landmarks}


def paste_back_call(frame_rgb: np.ndarray) -> Callable[[], object]:
    """Paste a 512² crop into the frame through the soft mask (mask warped once per source, as in the pipeline)."""
    from runtime.paste_back import paste_back, prepare_paste_back

    h, w = frame_rgb.shape[:2]
    side = 0.6 * min(h, w) / 512.0
    m_c2o = np.array([[side, 0.0, 0.2 * w], [0.0, side, 0.2 * h]], np.float64)
    mask = prepare_paste_back(None, m_c2o, (w, h))
    crop = synthetic_faces(1, size=512, seed=3)[0]
    return lambda: paste_back(crop, m_c2o, frame_rgb, mask)


def driving_frames(count: int) -> list[np.ndarray]:
    """The first `count` frames of the repo's driving clip, else synthetic 256² frames."""
    clip = ASSETS / "driving_carphone.mp4"
    if clip.is_file():
        from runtime.media import VideoReader

        frames = []
        with VideoReader(clip) as reader:
            for frame in reader:
                frames.append(frame)
                if len(frames) == count:
                    break
        if frames:
            return frames
    return list(synthetic_faces(count, seed=7))


def source_image() -> np.ndarray:
    """The repo's astronaut portrait, else a synthetic 512² face."""
    path = ASSETS / "source_astronaut.png"
    if path.is_file():
        from runtime.media import load_image_rgb

        return load_image_rgb(path)
    return synthetic_faces(1, size=512, seed=11)[0]


def write_clip(path: Path, frames: Sequence[np.ndarray], fps: float = 25.0) -> Path:
    from runtime.media import VideoWriter

    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.path


def decode_call(clip: Path) -> Callable[[], int]:
    from runtime.media import VideoReader

    def decode() -> int:
        with VideoReader(clip) as reader:
            return sum(1 for _ in reader)

    return decode


def encode_call(frames: Sequence[np.ndarray], folder: Path) -> Callable[[], Path]:
    return lambda: write_clip(folder / "encode.mp4", frames)


def torch_skip_reason(args: argparse.Namespace) -> str:
    """Why the PyTorch comparison cannot run (empty when it can)."""
    if args.no_torch:
        return "PyTorch comparison off (--no-torch)"
    if importlib.util.find_spec("torch") is None:
        return "PyTorch comparison skipped: torch is not installed (pip install torch)"
    weights = Path(args.weights)
    if not (weights / "liveportrait" / "base_models").is_dir():
        return f"PyTorch comparison skipped: no official weights under {weights}/liveportrait/base_models"
    return ""


# ------------------------------------------------------------------------------------------------ CPU tuning
@dataclass(frozen=True)
class SessionConfig:
    """One point of the CPU session-option sweep."""

    threads: int = 0
    parallel: bool = False
    opt_level: str = "all"
    spinning: bool = True
    flush_denormals: bool = True  # the runtime's CPU sessions set it (runtime/sessions.py)
    mem_pattern: bool = False  # the runtime's CPU sessions turn it off

    def label(self) -> str:
        mode = "parallel" if self.parallel else "sequential"
        spin = "" if self.spinning else " no-spin"
        ftz = "" if self.flush_denormals else " no-ftz"
        pattern = " mem-pattern" if self.mem_pattern else ""
        return f"threads={self.threads or 'default'} {mode} opt={self.opt_level}{spin}{ftz}{pattern}"

    def options(self) -> Any:
        import onnxruntime as ort

        levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = levels[self.opt_level]
        opts.intra_op_num_threads = self.threads
        if self.parallel:
            opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        if not self.spinning:  # idle worker threads sleep instead of busy-waiting (matters on shared machines)
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.enable_mem_pattern = self.mem_pattern
        opts.add_session_config_entry("session.set_denormal_as_zero", "1" if self.flush_denormals else "0")
        from runtime.sessions import use_shared_cpu_arena

        use_shared_cpu_arena(opts)  # as the runtime's CPU sessions do
        return opts


def tune_configs(cores: int) -> list[SessionConfig]:
    """One factor at a time around the runtime's settings: thread counts, parallel executor, lower optimisation
    levels (no NCHWc layout), no spinning, flush-to-zero off (Intel cores pay for subnormals), memory pattern on."""
    base = SessionConfig()
    threads = sorted({1, max(cores // 2, 1), cores} - {0})
    out = [base] + [SessionConfig(threads=t) for t in threads]
    out += [SessionConfig(parallel=True), SessionConfig(opt_level="basic"), SessionConfig(opt_level="extended"),
            SessionConfig(spinning=False), SessionConfig(flush_denormals=False), SessionConfig(mem_pattern=True)]
    return list(dict.fromkeys(out))


def tune_cpu(models_dir: Path, graphs: Sequence[str], batches: Sequence[int], repeats: int, warmup: int,
             configs: Sequence[SessionConfig]) -> list[dict[str, Any]]:
    """ms/frame of each graph × config × batch on the CPU EP.

    Configurations are interleaved round by round (one run of each per round), so a neighbour's load that comes
    and goes on a shared machine hits every configuration alike instead of favouring whichever ran first.
    """
    import onnxruntime as ort

    from runtime.manifest import verify_models
    from runtime.sessions import ModelSet
    from runtime.stages import Stages

    manifest = verify_models(models_dir, list(graphs), check_hash=False)
    stages = Stages(ModelSet(models_dir, device="cpu", check_hash=False))
    inputs = {b: make_net_inputs(stages, b) for b in batches}
    rows = []
    for graph in graphs:
        path = str(Path(models_dir) / manifest.models[graph].file)
        sessions = [ort.InferenceSession(path, c.options(), providers=["CPUExecutionProvider"]) for c in configs]
        feeds = {b: _graph_feeds(graph, inputs[b]) for b in batches}
        times: dict[tuple[int, int], list[float]] = {(i, b): [] for i in range(len(configs)) for b in batches}
        cpu: dict[tuple[int, int], list[float]] = {k: [] for k in times}
        for round_ in range(warmup + repeats):
            for (i, b), values in times.items():
                cpu_start = time.process_time()
                ms = time_per_frame(lambda s=sessions[i], f=feeds[b]: s.run(None, f), b, 1, 0)
                if round_ >= warmup:
                    values.extend(ms)
                    cpu[i, b].append((time.process_time() - cpu_start) * 1000.0 / b)
        for (i, b), values in times.items():
            rows.append({"graph": graph, "config": configs[i].label(), "batch": b, "ms_per_frame": median(values),
                         "p90": p90(values), "min": min(values), "cpu_ms_per_frame": median(cpu[i, b])})
            print(f"  {graph:<18} {configs[i].label():<48} b={b}  {median(values):9.1f} ms/frame "
                  f"(p90 {p90(values):.1f}, min {min(values):.1f}, cpu {median(cpu[i, b]):.1f})", flush=True)
        del sessions
    return rows


def _graph_feeds(graph: str, x: NetInputs) -> dict[str, np.ndarray]:
    from runtime.stages import to_network_input

    n = len(x.images)
    if graph in ("motion_extractor", "appearance_feature_extractor"):
        return {"image": to_network_input(x.images)}
    if graph == "warping_spade":
        return {"feature_3d": np.ascontiguousarray(np.repeat(x.feature, n, axis=0)), "kp_driving": x.kp_driving,
                "kp_source": np.ascontiguousarray(np.repeat(x.kp_source, n, axis=0))}
    raise KeyError(f"tuning supports motion_extractor, appearance_feature_extractor, warping_spade; not {graph}")


# ------------------------------------------------------------------------------------------------ report
def format_table(rows: Sequence[Timing], compiled: bool = False) -> str:
    """stage | batch | ours ms/frame (p90) | torch ms/frame (p90) | torch/ours."""
    head = f"{'stage':<20} {'batch':>5} {'ours ms/frame':>18} {'torch ms/frame':>18} {'torch/ours':>10}"
    if compiled:
        head += f" {'compiled ms':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        def cell(values: list[float]) -> str:
            return f"{median(values):9.2f} ({p90(values):6.1f})" if values else f"{'-':>18}"
        ratio = r.ratio()
        line = f"{r.stage:<20} {r.batch:>5} {cell(r.ours):>18} {cell(r.torch):>18} "
        line += f"{ratio:>9.2f}x" if ratio is not None else f"{'':>10}"
        if compiled:
            line += f" {median(r.torch_compiled):12.2f}" if r.torch_compiled else f" {'-':>12}"
        if r.stage in E2E_STAGES and r.ours:
            line += f"   {1000.0 / median(r.ours):.2f} frames/s"
        if r.note:
            line += f"   ({r.note})"
        lines.append(line)
    return "\n".join(lines)


def device_name(device: str, torch_ref: TorchReference | None) -> str:
    """GPU name for GPU devices (torch or nvidia-smi), else the CPU model from /proc/cpuinfo."""
    if device in ("cuda", "tensorrt"):
        if torch_ref is not None and torch_ref.device.type == "cuda":
            return torch_ref.torch.cuda.get_device_name(0)
        import subprocess

        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10, check=True).stdout.strip().splitlines()
            if out:
                return out[0]
        except (OSError, subprocess.SubprocessError):
            pass
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def versions() -> dict[str, str | None]:
    """Library versions, read from package metadata (never imports torch)."""
    def ver(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    import onnxruntime as ort

    return {"onnxruntime": ort.__version__, "torch": ver("torch"), "numpy": np.__version__,
            "opencv": ver("opencv-python-headless") or ver("opencv-python") or ver("opencv-contrib-python-headless"),
            "av": ver("av"), "python": platform.python_version()}


def build_report(rows: Sequence[Timing], device: str, torch_ref: TorchReference | None,
                 providers: dict[str, str], variants: dict[str, str], threads: dict[str, Any],
                 notes: list[str]) -> dict[str, Any]:
    """The JSON document: machine, versions, providers and graph files, threads, per-stage medians, torch/ours
    ratios."""
    return {
        "device": device_name(device, torch_ref),
        "engine_device": device,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "providers": providers,
        "variants": variants,
        "threads": threads,
        "stages": {r.key: r.as_dict() for r in rows},
        "speedup_vs_torch": {r.key: r.ratio() for r in rows if r.ratio() is not None},
        "notes": notes,
    }


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=Path, default=Path("models_onnx"),
                        help="exported graphs (default: %(default)s)")
    parser.add_argument("--weights", type=Path, default=Path("pretrained_weights"),
                        help="official checkpoints for the PyTorch reference (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        choices=["auto", "cuda", "tensorrt", "coreml", "openvino", "directml", "cpu"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16"])
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads for both engines (0 = default)")
    parser.add_argument("--batch-sizes", default="1", help="comma list for the network stages (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per stage (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=8, help="frames for decode/encode/end-to-end (default: 8)")
    parser.add_argument("--stages", default="all", help=f"comma list of: {', '.join(STAGES)} (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--torch-compile", action="store_true", help="also time torch.compile (fp16 on CUDA)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="CUDA only: warping + decoder captured as a CUDA graph at the (single) --batch-sizes")
    parser.add_argument("--xpose-models", type=Path, default=Path("models_onnx/liveportrait_animals"),
                        dest="xpose_models", help="animal models folder with xpose.onnx (default: %(default)s)")
    parser.add_argument("--xpose-size", default="800x937", dest="xpose_size",
                        help="HxW of the X-Pose input (default: %(default)s, a 512x600 photo after the resize rule)")
    parser.add_argument("--tune", action="store_true",
                        help="instead: sweep CPU session options (threads, executor, optimisation level, batch)")


def parse_list(text: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if items == ["all"]:
        return list(allowed)
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise ValueError(f"unknown {what} {', '.join(bad) or '(empty)'}; choose from: {', '.join(allowed)}")
    return [s for s in allowed if s in items]


def parse_batches(text: str) -> list[int]:
    try:
        batches = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise ValueError(f"--batch-sizes must be a comma list of positive integers, got {text!r}")
    return sorted(set(batches))


def run(args: argparse.Namespace) -> int:
    """Run the selected stages, print the table, write JSON; 2 on bad options, 1 when the models cannot load."""
    try:
        stages = parse_list(args.stages, STAGES, "stage")
        batches = parse_batches(args.batch_sizes)
        if args.repeats < 1 or args.warmup < 0 or args.frames < 1:
            raise ValueError("--repeats and --frames must be ≥ 1 and --warmup ≥ 0")
        if args.cuda_graph and len(batches) != 1:
            raise ValueError("--cuda-graph captures one batch size: give a single --batch-sizes value")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.tune:
        return run_tune(args, batches)
    from runtime.api import LivePortrait
    from runtime.manifest import ModelsError
    from runtime.providers import DeviceError

    try:
        if stages == ["xpose"]:  # the animal detector alone needs no human models folder
            from types import SimpleNamespace

            from runtime.providers import resolve_device

            engine = SimpleNamespace(device=resolve_device(args.device).device,
                                     models=SimpleNamespace(keys={}, _runners={}))
        else:
            engine = LivePortrait(args.models, device=args.device, precision=args.precision, threads=args.threads,
                                  cuda_graph_batch=batches[0] if args.cuda_graph else 0)
    except (ModelsError, DeviceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    notes: list[str] = []
    torch_ref = _torch_reference(args, engine.device, stages, notes)
    rows = run_stages(engine, stages, batches, args, torch_ref, notes)
    providers = _placements(engine.models)
    variants = {graph: engine.models.keys[graph] for graph in providers}  # the manifest key each graph ran
    print(f"device: {engine.device} ({device_name(engine.device, torch_ref)}), models: {args.models}, warping graph: "
          f"{engine.models.keys.get('warping_spade')}")
    print(format_table(rows, compiled=bool(torch_ref and torch_ref.compiled)))
    for note in notes:
        print(f"note: {note}")
    if args.json is not None:
        threads = {"onnxruntime_intra_op": args.threads or "default",
                   "torch": torch_ref.torch.get_num_threads() if torch_ref else None}
        report = build_report(rows, engine.device, torch_ref, providers, variants, threads, notes)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


def _placements(models: Any) -> dict[str, str]:
    """Provider of every graph the run loaded (OpenVINO runners report the OpenVINO device)."""
    out = {}
    for graph, runner in getattr(models, "_runners", {}).items():
        placement = runner.placement() if hasattr(runner, "placement") else ["OpenVINO"]
        out[graph] = placement[0]
    return out


def _torch_reference(args: argparse.Namespace, device: str, stages: list[str],
                     notes: list[str]) -> TorchReference | None:
    if not any(s in NET_STAGES for s in stages):
        return None
    reason = torch_skip_reason(args)
    if reason:
        notes.append(reason)
        return None
    from export.torch_reference import TorchReference, torch_device_for  # torch lives in export/ only

    torch_device = torch_device_for(device)
    if device not in ("cpu", "cuda", "tensorrt"):
        notes.append(f"torch runs on {torch_device} while the engine runs on {device}")
    try:
        ref = TorchReference(args.weights, torch_device, args.threads)
    except Exception as exc:  # noqa: BLE001 - a broken weights tree must not stop our own timings
        notes.append(f"PyTorch comparison skipped: {str(exc).splitlines()[0][:200]}")
        return None
    if args.torch_compile:
        note = ref.compile()
        if note:
            notes.append(note)
    return ref


def run_stages(engine: Any, stages: list[str], batches: list[int], args: argparse.Namespace,
               torch_ref: TorchReference | None, notes: list[str]) -> list[Timing]:
    """Time every selected stage; a stage that fails is reported as a note and the rest still run."""
    from runtime.stages import Stages

    rows: list[Timing] = []
    reps, warm = args.repeats, args.warmup
    net = [s for s in stages if s in NET_STAGES]
    if net:
        ours_stages = Stages(engine.models)
        for b in batches:
            x = make_net_inputs(ours_stages, b)
            ours = ours_net_calls(ours_stages, x)
            ref = torch_ref.calls(x) if torch_ref else {}
            comp = torch_ref.calls(x, compiled=True) if torch_ref and torch_ref.compiled else {}
            sync = torch_ref.sync if torch_ref else None
            for s in net:
                row = Timing(s, b)
                for _ in range(warm):
                    ours[s]()
                    if ref:
                        ref[s]()
                for _ in range(max(warm, 2) if comp else 0):
                    comp[s]()
                # engines alternate run by run, so load from other processes hits both alike
                for _ in range(reps):
                    row.ours += time_per_frame(ours[s], b, 1, 0)
                    if ref:
                        row.torch += time_per_frame(ref[s], b, 1, 0, sync)
                    if comp:
                        row.torch_compiled += time_per_frame(comp[s], b, 1, 0, sync)
                rows.append(row)
                print(f"  {s:<20} b={b}: ours {median(row.ours):.2f} ms/frame", flush=True)
    if "xpose" in stages:
        rows += _xpose_rows(engine, args, notes)
    other = [s for s in stages if s not in NET_STAGES and s != "xpose"]
    if other:
        with tempfile.TemporaryDirectory(prefix="lp-bench-") as tmp:
            rows += _media_and_e2e(engine, other, args, Path(tmp), notes)
    order = {s: i for i, s in enumerate(STAGES)}
    return sorted(rows, key=lambda r: (order[r.stage], r.batch))


def _xpose_rows(engine: Any, args: argparse.Namespace, notes: list[str]) -> list[Timing]:
    """X-Pose on the engine's device vs our PyTorch module (skipped with a note when the animal folder is absent)."""
    from runtime.bench_xpose import parse_size, torch_xpose_call, xpose_feeds, xpose_runner
    from runtime.manifest import ModelsError

    try:
        size = parse_size(getattr(args, "xpose_size", "800x937"))
        folder = Path(getattr(args, "xpose_models", Path("models_onnx/liveportrait_animals")))
        runner = xpose_runner(folder, engine.device, args.threads)
        feeds = xpose_feeds(folder, size)
    except (ModelsError, ValueError, OSError) as exc:
        notes.append(f"xpose skipped: {str(exc).splitlines()[0][:200]}")
        return []
    ref = None if args.no_torch else torch_xpose_call(args.weights, feeds, args.threads)
    if ref is None and not args.no_torch:
        notes.append(f"xpose: PyTorch comparison skipped (needs torch and "
                     f"{args.weights}/liveportrait_animals/xpose.pth)")
    row = Timing("xpose", 1, note=f"{size[0]}x{size[1]} input, 9 keypoints")
    for _ in range(args.warmup):
        runner.run(feeds)
    for _ in range(args.repeats):
        row.ours += time_per_frame(lambda: runner.run(feeds), 1, 1, 0)
        if ref is not None:
            row.torch += time_per_frame(ref, 1, 1, 0)
    print(f"  {'xpose':<20} {size[0]}x{size[1]}: ours {median(row.ours):.0f} ms", flush=True)
    return [row]


def _media_and_e2e(engine: Any, stages: list[str], args: argparse.Namespace, tmp: Path,
                   notes: list[str]) -> list[Timing]:
    reps, warm = args.repeats, args.warmup
    source = source_image()
    frames = driving_frames(args.frames)
    clip = write_clip(tmp / "driving.mp4", frames)
    calls: dict[str, Callable[[], object]] = {}
    if "detection" in stages or "landmarks" in stages:
        import cv2

        calls.update(face_calls(engine.models, cv2.resize(source, (512, 512), interpolation=cv2.INTER_AREA)))
    calls["paste_back"] = paste_back_call(source)
    rows = []
    for s in ("detection", "landmarks", "paste_back"):
        if s in stages:
            rows.append(Timing(s, 1, ours=time_per_frame(calls[s], 1, reps, warm)))
    n = len(frames)
    if "decode" in stages:
        rows.append(Timing("decode", 1, ours=time_per_frame(decode_call(clip), n, reps, warm),
                           note=f"{n} frames {frames[0].shape[1]}x{frames[0].shape[0]}"))
    if "encode" in stages:
        crops = [np.ascontiguousarray(np.roll(synthetic_faces(1, 512, seed=5)[0], 8 * i, axis=1)) for i in range(n)]
        rows.append(Timing("encode", 1, ours=time_per_frame(encode_call(crops, tmp), n, reps, warm),
                           note=f"{n} frames 512x512 H.264"))
    e2e = [s for s in E2E_STAGES if s in stages]
    if e2e:
        from runtime.media import write_image_rgb

        src_path = write_image_rgb(tmp / "source.png", source)
        for graph in engine.models.keys:  # load every session first: the timed runs measure animation only
            engine.models.runner(graph)
        e2e_reps = 1  # a whole animation per repeat: one run after the stages above warmed the sessions
        for s in e2e:
            src = src_path if s == "image_to_video" else clip
            out = tmp / f"out_{s}"

            def animate(src: Path = src, out: Path = out) -> object:
                return engine.animate(src, clip, output_dir=out, write_concat=False, progress=False)

            try:
                ms = time_per_frame(animate, n, e2e_reps, 0)
            except Exception as exc:  # noqa: BLE001 - e.g. no face in a synthetic source with real det_10g
                notes.append(f"{s} skipped: {str(exc).splitlines()[0][:200]}")
                continue
            rows.append(Timing(s, engine.default_batch(), ours=ms,
                               note=f"{n} frames incl. face analysis, paste-back, H.264 encode"))
    return rows


def run_tune(args: argparse.Namespace, batches: list[int]) -> int:
    """Print (and optionally save) the CPU session-option sweep on the motion and warping graphs."""
    import os

    cores = os.cpu_count() or 1
    configs = tune_configs(cores)
    chosen = [s for s in parse_list(args.stages, STAGES, "stage") if s in TUNE_GRAPHS]
    graphs = [TUNE_GRAPHS[s] for s in chosen] if args.stages != "all" and chosen else [
        "motion_extractor", "warping_spade"]
    print(f"CPU tuning on {device_name('cpu', None)} ({cores} logical cores), repeats {args.repeats}")
    rows = tune_cpu(args.models, graphs, batches, args.repeats, args.warmup, configs)
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["graph"] not in best or row["ms_per_frame"] < best[row["graph"]]["ms_per_frame"]:
            best[row["graph"]] = row
    for graph, row in best.items():
        print(f"best {graph}: {row['config']} batch {row['batch']}: {row['ms_per_frame']:.1f} ms/frame")
    if args.json is not None:
        args.json.write_text(json.dumps({"device": device_name("cpu", None), "cores": cores, "rows": rows,
                                         "best": best, "versions": versions()}, indent=2))
    return 0
