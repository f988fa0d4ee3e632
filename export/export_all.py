"""`python cli.py export`: official checkpoints → verified contract graphs, variants, face graphs, manifest."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from export.checkpoints import ANIMAL_FAMILY, checkpoint_sha256, load_all, relative_checkpoint
from export.fp16 import psnr, to_mixed_fp16
from export.graphs import GRAPH_SPECS, build_graph_module
from export.onnx_export import (
    OPSET,
    PARITY_TOL,
    ExportError,
    build_checked,
    cpu_session,
    parity_inputs,
    probe_inputs,
    save_model,
)
from export.paste_back_graph import export_paste_back
from runtime.manifest import (
    ANIMAL_NETWORK_GRAPHS,
    CORE_GRAPHS,
    XPOSE_GRAPH,
    XPOSE_TEXT,
    Manifest,
    ModelEntry,
    TensorSpec,
    sha256_file,
)

FP16_GRAPHS = ("appearance_feature_extractor", "motion_extractor", "warping_spade")
COREML_GRAPHS = ("appearance_feature_extractor", "motion_extractor")  # written with --grid-sample 4d
FP16_MIN_PSNR = 35.0  # dB, decoded image vs the fp32 graph
FP16_MAX_REL = 2e-2  # other fp16 graphs: max-abs relative to the output scale
GS4D_TOL = 1e-3  # decomposed grid-sample graph vs the native one, relative to the output scale
FACE_FILES = {
    "det_10g": "insightface/models/buffalo_l/det_10g.onnx",
    "2d106det": "insightface/models/buffalo_l/2d106det.onnx",
}


@dataclass
class Row:
    """One line of the summary table."""

    file: str
    bytes: int
    error: str
    seconds: float


def _tensor_specs(values: list[onnx.ValueInfoProto]) -> list[TensorSpec]:
    """Names, shapes (symbolic where dynamic) and dtypes of graph inputs/outputs."""
    specs = []
    for v in values:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
        specs.append(TensorSpec(v.name, dims, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name))
    return specs


def _entry(key: str, graph: str, path: Path, model: onnx.ModelProto, precision: str, grid: str | None,
           checkpoints: dict[str, str], parity: dict[str, float]) -> ModelEntry:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return ModelEntry(
        key=key, file=path.name, graph=graph, sha256=sha256_file(path), bytes=path.stat().st_size, opset=opset,
        precision=precision, grid_sample=grid, inputs=_tensor_specs(list(model.graph.input)),
        outputs=_tensor_specs(list(model.graph.output)), checkpoints=checkpoints, parity=parity,
    )


def _grid_form(model: onnx.ModelProto) -> str | None:
    """'5d' / '4d' from the GridSample nodes' input ranks, None when the graph samples nothing."""
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    forms = {ranks.get(n.input[0]) for n in model.graph.node if n.op_type == "GridSample"}
    if not forms:
        return None
    return "5d" if 5 in forms else "4d"


class Exporter:
    """Holds the loaded networks and writes graphs + manifest entries into one output folder."""

    def __init__(self, weights: Path, out: Path, family: str = "liveportrait") -> None:
        self.weights, self.out, self.family = Path(weights), Path(out), family
        self.networks = load_all(self.weights, family)
        self.entries: dict[str, ModelEntry] = {}
        self.rows: list[Row] = []
        self.skipped_keys: list[str] = []  # checkpoint keys skipped by name (X-Pose's bundled clip_model.*)
        self._ckpt_hash: dict[str, str] = {}
        self._fp32: dict[str, onnx.ModelProto] = {}
        self._reference: dict[str, list[np.ndarray]] = {}
        self._reference_feeds: dict[str, dict[str, np.ndarray]] = {}

    def _checkpoints(self, graph: str) -> dict[str, str]:
        result = {}
        for net in GRAPH_SPECS[graph].networks:
            rel = relative_checkpoint(net, self.family)
            if rel not in self._ckpt_hash:
                self._ckpt_hash[rel] = checkpoint_sha256(self.weights / rel)
            result[rel] = self._ckpt_hash[rel]
        return result

    def _record(self, key: str, graph: str, model: onnx.ModelProto, precision: str, error: str,
                parity: dict[str, float], seconds: float) -> onnx.ModelProto:
        path = self.out / f"{key}.onnx"
        save_model(model, path)
        self.entries[key] = _entry(key, graph, path, model, precision, _grid_form(model), self._checkpoints(graph),
                                   parity)
        self.rows.append(Row(path.name, path.stat().st_size, error, seconds))
        return model

    def export_fp32(self, graph: str) -> onnx.ModelProto:
        """The contract graph itself."""
        start = time.perf_counter()
        module = build_graph_module(graph, self.networks)
        if graph == "warping_spade":
            from export.networks.spade import fold_spectral_norm

            fold_spectral_norm(module.decoder)
        model, check = build_checked(module, GRAPH_SPECS[graph], self.networks, seed=0)
        self._fp32[graph] = model
        return self._record(graph, graph, model, "fp32", f"max-abs {check.max_abs:.2e} (rel {check.relative:.1e})",
                            {"max_abs": check.max_abs, "output_scale": check.output_scale},
                            time.perf_counter() - start)

    def fp32_model(self, graph: str) -> onnx.ModelProto:
        """The fp32 contract graph exported in this run (variants are derived from it)."""
        return self._fp32[graph]

    def reference_feeds(self, graph: str) -> dict[str, np.ndarray]:
        """The first item of the graph's parity inputs, by input name: variants run on it at batch 1 (the fp32
        graph already proved the dynamic batch), so their outputs compare with `reference`."""
        if graph not in self._reference_feeds:
            args = parity_inputs(graph, self.networks, seed=0)
            self._reference_feeds[graph] = {name: a[:1].numpy()
                                            for (name, _), a in zip(GRAPH_SPECS[graph].inputs, args, strict=True)}
        return self._reference_feeds[graph]

    def reference(self, graph: str) -> list[np.ndarray]:
        """ORT-CPU outputs of the written fp32 graph on `reference_feeds`, computed once at batch 1: variants are
        compared with it. Not item 0 of the fp32 check's batch run: MLAS picks other GEMM blockings for another
        batch, which alone moved warping_spade's output ~1e-4 of scale and would charge that to the rewrites."""
        if graph not in self._reference:
            self._reference[graph] = self._run(self._fp32[graph], graph)
        return self._reference[graph]

    def _run(self, model: onnx.ModelProto, graph: str) -> list[np.ndarray]:
        """All outputs of a graph (or a variant of it) on the CPU at batch 1 on `reference_feeds`, as float32."""
        return [o.astype(np.float32) for o in cpu_session(model).run(None, self.reference_feeds(graph))]

    def _check_against_native(self, key: str, model: onnx.ModelProto) -> tuple[float, float]:
        """(max-abs, output scale) of a rewritten warping graph vs the native one; raises when over GS4D_TOL."""
        native = self.reference("warping_spade")[0]
        got = self._run(model, "warping_spade")[0]
        diff = float(np.abs(native - got).max())
        scale = float(np.abs(native).max())
        if diff / max(scale, 1e-6) > GS4D_TOL:
            raise ExportError(f"{key} differs from the native graph by {diff:.3g} (scale {scale:.3g}); not written")
        return diff, scale

    def _trace_2d_warping(self, four_d_sampler: bool, cpu_forms: bool = False) -> tuple[onnx.ModelProto, int, int]:
        """warping_spade traced with its 3-D convs, pools and norms as 2-D ops (depth folded into the batch) and
        the 5-D sampler either native or as 4-D GridSamples; same numbers as the contract graph. `cpu_forms`
        computes the hourglass's 3×3×3 convs by Winograd F(2, 3) along depth (a third fewer multiplications) and
        folds SPADE's `1 +` and the learned shortcuts' β (export/spade_fold.py); returns the graph, how many convs
        took the depth-Winograd form and how many shortcuts were folded."""
        from export.coreml_friendly import make_coreml_friendly
        from export.depth_winograd import use_depth_winograd
        from export.gridsample4d import GridSample3dVia2d
        from export.networks.spade import fold_spectral_norm
        from export.networks.warping import set_grid_sampler
        from export.onnx_export import simplify, trace
        from export.spade_fold import fold_spade

        module = build_graph_module("warping_spade", self.networks)
        fold_spectral_norm(module.decoder)
        module = make_coreml_friendly(module)  # a deep copy with 2-D convs and rank <= 5 tensors
        if four_d_sampler:
            set_grid_sampler(module.warping, GridSample3dVia2d())  # on the copy: the loaded networks keep theirs
        depth_wino = use_depth_winograd(module) if cpu_forms else 0
        if cpu_forms and depth_wino == 0:
            raise ExportError("warping_spade: no 3×3×3 convolution qualified for the depth-Winograd form")
        shortcuts = fold_spade(module.decoder) if cpu_forms else 0
        spec = GRAPH_SPECS["warping_spade"]
        model = simplify(trace(module, spec, probe_inputs("warping_spade", self.networks, 1)))
        onnx.checker.check_model(model)
        return model, depth_wino, shortcuts

    def export_gs4d(self, fp32_model: onnx.ModelProto) -> onnx.ModelProto:
        """warping_spade with the 5-D sampler as 4-D GridSamples and every op in the CoreML EP's set (one partition),
        checked against the native graph."""
        start = time.perf_counter()
        self._fp32.setdefault("warping_spade", fp32_model)
        model, _, _ = self._trace_2d_warping(four_d_sampler=True)
        if _grid_form(model) != "4d":
            raise ExportError("warping_spade.gs4d: the graph still contains a 5-D GridSample")
        diff, scale = self._check_against_native("warping_spade.gs4d", model)
        return self._record("warping_spade.gs4d", "warping_spade", model, "fp32",
                            f"max-abs {diff:.2e} vs native 5-D graph",
                            {"max_abs_vs_native": diff, "output_scale": scale},
                            time.perf_counter() - start)

    def export_winograd(self, fp32_model: onnx.ModelProto) -> onnx.ModelProto:
        """warping_spade.wino, the CPU execution provider's fastest form: the native 5-D sampler (one ORT kernel;
        the 4-D decomposition's coordinate arithmetic costs ~0.8 s a frame on the CPU), 3-D convs as 2-D ones
        (ORT's blocked 2-D kernels beat its 3-D im2col), then exact rewrites that do less arithmetic: convolutions of
        nearest-upsampled maps at the small size (polyphase), the large 3×3 convs as Winograd F(4×4, 3×3) (a quarter
        of the multiplications), the hourglass's 3×3×3 convs by Winograd F(2, 3) along depth (two thirds of the
        multiplications), the 7×7×7 mask conv by FFT and the 1-channel occlusion conv as per-tap 1×1 convs plus a
        tap sum; checked against the native graph."""
        from export.denormals import flush_heatmap_denormals
        from export.fourier_conv import fourier_convs
        from export.narrow_conv import narrow_output_convs
        from export.polyphase import polyphase_convs
        from export.winograd import output_form_for, winograd_convs
        from runtime.cpu_route import cpu_flags

        start = time.perf_counter()
        self._fp32.setdefault("warping_spade", fp32_model)
        model, depth_wino, shortcuts = self._trace_2d_warping(four_d_sampler=False, cpu_forms=True)
        inputs = {name: [1 if d == "N" else d for d in dims] for name, dims in GRAPH_SPECS["warping_spade"].inputs}
        model, polyphase = polyphase_convs(model, inputs)  # SPADE's mlp_shared on the upsampled feature, first
        form = output_form_for(cpu_flags())  # the Winograd output transform measured faster on this CPU
        model, report = winograd_convs(model, inputs, output_form=form)
        if report.rewritten == 0:
            raise ExportError("warping_spade.wino: no convolution qualified for the Winograd rewrite")
        model, fourier = fourier_convs(model, inputs)  # the 7×7×7 mask convolution
        model, narrow = narrow_output_convs(model)  # the 1-channel 7×7 occlusion convolution
        # x86 CPUs: no subnormal reaches a convolution (not in .gs4d: the CoreML EP has no Where)
        model, flushed = flush_heatmap_denormals(model)
        onnx.checker.check_model(model)
        diff, scale = self._check_against_native("warping_spade.wino", model)
        return self._record("warping_spade.wino", "warping_spade", model, "fp32",
                            f"max-abs {diff:.2e} vs native; {report.rewritten} convs Winograd ({form}), "
                            f"{fourier.rewritten} Fourier, {polyphase.rewritten} polyphase, {narrow.rewritten} narrow, "
                            f"{depth_wino} depth-Winograd, {shortcuts} SPADE shortcuts folded",
                            {"max_abs_vs_native": diff, "output_scale": scale,
                             "winograd_convs": float(report.rewritten),
                             "winograd_gmac_saved": round(report.gmac_before - report.gmac_after, 1),
                             "winograd_depth_to_space": float(form == "depth_to_space"),
                             "fourier_convs": float(fourier.rewritten),
                             "fourier_gmac_saved": round(fourier.gmac_before - fourier.gmac_after, 1),
                             "polyphase_convs": float(polyphase.rewritten),
                             "polyphase_gmac_saved": round(polyphase.gmac_before - polyphase.gmac_after, 1),
                             "narrow_convs": float(narrow.rewritten),
                             "depth_winograd_convs": float(depth_wino),
                             "spade_shortcuts_folded": float(shortcuts),
                             "denormal_flushes": float(flushed)},
                            time.perf_counter() - start)

    def export_coreml(self, graph: str) -> onnx.ModelProto:
        """`<graph>.coreml.onnx`: the same graph with 3-D convs/BN/L2-norm rewritten into ops CoreML runs whole."""
        from export.coreml_friendly import make_coreml_friendly

        start = time.perf_counter()
        module = make_coreml_friendly(build_graph_module(graph, self.networks))
        model, check = build_checked(module, GRAPH_SPECS[graph], self.networks)
        ref = self.reference(graph)
        got = self._run(model, graph)
        diff = max(float(np.abs(r - g).max()) for r, g in zip(ref, got, strict=True))
        scale = max(float(np.abs(r).max()) for r in ref)
        if diff > PARITY_TOL * max(scale, 1e-6):
            raise ExportError(f"{graph}.coreml differs from {graph}.onnx by {diff:.3g}; not written")
        return self._record(f"{graph}.coreml", graph, model, "fp32", f"max-abs {diff:.2e} vs {graph}.onnx",
                            {"max_abs": check.max_abs, "output_scale": check.output_scale,
                             "max_abs_vs_fp32_graph": diff}, time.perf_counter() - start)

    def export_split(self) -> None:
        """warping.gs4d + spade_decoder: warping_spade in two halves, so a runtime can run the decoder (72 % of
        the FLOPs) at reduced precision while the grid-sample coordinates stay fp32 (OpenVINO bf16 on AMX CPUs)."""
        from export.coreml_friendly import make_coreml_friendly
        from export.denormals import flush_heatmap_denormals
        from export.gridsample4d import GridSample3dVia2d
        from export.networks.spade import fold_spectral_norm
        from export.networks.warping import set_grid_sampler

        start = time.perf_counter()
        warping = make_coreml_friendly(build_graph_module("warping", self.networks))
        set_grid_sampler(warping.warping, GridSample3dVia2d())
        model, check = build_checked(warping, GRAPH_SPECS["warping"], self.networks, tolerance=GS4D_TOL,
                                     rewrite=lambda m: flush_heatmap_denormals(m)[0])
        self._record("warping.gs4d", "warping", model, "fp32", f"max-abs {check.max_abs:.2e} (rel "
                     f"{check.relative:.1e})", {"max_abs": check.max_abs, "output_scale": check.output_scale},
                     time.perf_counter() - start)
        start = time.perf_counter()
        decoder = build_graph_module("spade_decoder", self.networks)
        fold_spectral_norm(decoder.decoder)
        model, check = build_checked(decoder, GRAPH_SPECS["spade_decoder"], self.networks)
        self._record("spade_decoder", "spade_decoder", model, "fp32", f"max-abs {check.max_abs:.2e} (rel "
                     f"{check.relative:.1e})", {"max_abs": check.max_abs, "output_scale": check.output_scale},
                     time.perf_counter() - start)

    def export_fp16(self, key: str, graph: str, fp32_model: onnx.ModelProto) -> onnx.ModelProto:
        """Mixed-precision twin of a fp32 graph; rejected unless it stays close to fp32 on realistic inputs."""
        start = time.perf_counter()
        self._fp32.setdefault(graph, fp32_model)
        model = to_mixed_fp16(fp32_model)
        onnx.checker.check_model(model)
        ref = self.reference(graph)
        got = self._run(model, graph)
        max_abs = max(float(np.abs(r - g.astype(np.float32)).max()) for r, g in zip(ref, got, strict=True))
        scale = max(float(np.abs(r).max()) for r in ref)
        parity: dict[str, float] = {"max_abs_vs_fp32": max_abs, "output_scale": scale}
        if graph == "warping_spade":
            value = psnr(ref[0], got[0])
            parity["psnr_db_vs_fp32"] = value
            error = f"PSNR {value:.1f} dB vs fp32"
            if value < FP16_MIN_PSNR:
                raise ExportError(f"{key}: PSNR {value:.1f} dB vs fp32 is below {FP16_MIN_PSNR} dB; not written")
        else:
            error = f"max-abs {max_abs:.2e} vs fp32"
            if max_abs / max(scale, 1e-6) > FP16_MAX_REL:
                raise ExportError(f"{key}: fp16 differs from fp32 by {max_abs:.3g} (scale {scale:.3g}); not written")
        return self._record(f"{key}.fp16", graph, model, "fp16", error, parity, time.perf_counter() - start)

    def export_xpose(self, trace_size: tuple[int, int] | None = None, check_size: tuple[int, int] | None = None,
                     slim: bool = True) -> onnx.ModelProto:
        """xpose.onnx from liveportrait_animals/xpose.pth, parity-checked at a size other than the trace size.
        slim=False skips onnxslim (1-3 min on this graph, no measurable speed-up on ORT CPU; tests use it)."""
        from export.networks.xpose.loading import load_xpose
        from export.xpose_export import CHECK_SIZE, TRACE_SIZE, build_xpose

        start = time.perf_counter()
        rel = f"{ANIMAL_FAMILY}/xpose.pth"
        module, skipped = load_xpose(self.weights / rel)
        self.skipped_keys = skipped
        model, check = build_xpose(module, trace_size or TRACE_SIZE, check_size or CHECK_SIZE, slim=slim)
        parity = {f"max_abs_{k}": v for k, v in check.max_abs.items()}
        parity |= {f"scale_{k}": v for k, v in check.scale.items()}
        parity |= {"relative": check.relative, "check_h": float(check.size[0]), "check_w": float(check.size[1])}
        path = self.out / f"{XPOSE_GRAPH}.onnx"
        save_model(model, path)
        ckpt = {rel: checkpoint_sha256(self.weights / rel)}
        self.entries[XPOSE_GRAPH] = _entry(XPOSE_GRAPH, XPOSE_GRAPH, path, model, "fp32", _grid_form(model), ckpt,
                                           parity)
        note = f"rel {check.relative:.1e} at {check.size[0]}x{check.size[1]}"
        if skipped:
            note += f"; skipped {len(skipped)} clip_model.* keys"
        self.rows.append(Row(path.name, path.stat().st_size, note, time.perf_counter() - start))
        return model

    def write_xpose_text(self, xpose_text: Path | None = None) -> Path:
        """xpose_text.npz: the CLIP text features (official pickles converted once, else the shipped copy)."""
        from export.xpose_text import text_arrays

        start = time.perf_counter()
        arrays, source = text_arrays(self.weights, xpose_text)
        path = self.out / f"{XPOSE_TEXT}.npz"
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
        self.entries[XPOSE_TEXT] = ModelEntry(
            key=XPOSE_TEXT, file=path.name, graph=XPOSE_TEXT, sha256=sha256_file(path), bytes=path.stat().st_size,
            opset=None, precision="fp32", grid_sample=None, inputs=[],
            outputs=[TensorSpec(k, tuple(v.shape), "float32") for k, v in arrays.items()],
            checkpoints={"source": source},
        )
        self.rows.append(Row(path.name, path.stat().st_size, source[:44], time.perf_counter() - start))
        return path

    def copy_face_graphs(self) -> None:
        """Copy the detector and landmark graphs in, after checking they load and look like the real models."""
        files = dict(FACE_FILES)
        files["landmark"] = f"{self.family}/landmark.onnx"
        for key, rel in files.items():
            start = time.perf_counter()
            src = self.weights / rel
            if not src.is_file():
                raise ExportError(f"{src} is missing: put the official file there (same tree as the official release)")
            model = onnx.load(str(src))
            try:
                onnx.checker.check_model(model)
                cpu_session(src)
            except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
                raise ExportError(f"{src} is not a valid ONNX model: {exc}") from exc
            dst = self.out / f"{key}.onnx"
            tmp = dst.with_name(dst.name + ".tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
            opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
            self.entries[key] = ModelEntry(
                key=key, file=dst.name, graph=key, sha256=sha256_file(dst), bytes=dst.stat().st_size, opset=opset,
                precision="fp32", grid_sample=None, inputs=_tensor_specs(list(model.graph.input)),
                outputs=_tensor_specs(list(model.graph.output)), checkpoints={rel: sha256_file(src)},
            )
            self.rows.append(Row(dst.name, dst.stat().st_size, "copied, checked", time.perf_counter() - start))

    def write_manifest(self) -> Path:
        """Merge with entries already in the folder (a later `--precision fp16` run adds to the set)."""
        from runtime.manifest import read_manifest

        entries = {}
        try:
            entries.update(read_manifest(self.out).models)
        except Exception:  # noqa: BLE001 - no or unreadable manifest: start afresh
            pass
        entries.update(self.entries)
        entries = {k: e for k, e in entries.items() if (self.out / e.file).is_file()}
        manifest = Manifest(
            models=entries,
            created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            exporter={
                "package": "liveportrait-onnx",
                "version": "0.1.0",
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": ort.__version__,
                "simplifier": _simplifier_version(),
                "opset": str(OPSET),
                "family": self.family,
            },
        )
        return manifest.write(self.out)


def _simplifier_version() -> str:
    import onnxslim

    return f"onnxslim {onnxslim.__version__}"


def default_out(family: str) -> Path:
    """models_onnx/ for the human family, models_onnx/liveportrait_animals/ for the animals (a folder of its own:
    the runtime loads one family's folder)."""
    return Path("models_onnx") / ANIMAL_FAMILY if family == ANIMAL_FAMILY else Path("models_onnx")


def export_models(weights: Path, out: Path | None = None, precision: str = "fp32", grid_sample: str = "5d",
                  family: str = "liveportrait", graphs: tuple[str, ...] | None = None,
                  winograd: bool = True, log=print, xpose_text: Path | None = None,
                  split: bool | None = None) -> list[Row]:
    """Export everything asked for; returns the summary rows. Raises ExportError/CheckpointError on any failure.

    The animal family writes ANIMAL_NETWORK_GRAPHS (the human stitching module, no eye/lip retargeting), xpose.onnx and
    xpose_text.npz besides the same variants and face graphs as the human export.

    split writes the warping.gs4d + spade_decoder pair (OpenVINO's bf16-decoder route) with the 5-D default too;
    None: when this machine's `--device auto` would run it (runtime/cpu_route.py: a bf16 CPU with OpenVINO).
    """
    if split is None:
        from runtime.cpu_route import split_wanted

        split = split_wanted()
    animals = family == ANIMAL_FAMILY
    if graphs is None:
        graphs = ANIMAL_NETWORK_GRAPHS if animals else CORE_GRAPHS
    out = Path(out) if out is not None else default_out(family)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log(f"Loading checkpoints from {weights} ({family}) ...")
    exporter = Exporter(weights, out, family)
    torch.set_grad_enabled(False)
    steps = list(graphs)
    for i, graph in enumerate(steps, 1):
        log(f"[{i}/{len(steps)}] {graph}.onnx: trace, simplify, check ...")
        exporter.export_fp32(graph)
        log(f"        {exporter.rows[-1].error} ({exporter.rows[-1].seconds:.1f} s)")
    if winograd and "warping_spade" in graphs:
        log("[+] warping_spade.wino.onnx: 3×3 convolutions as Winograd F(4×4, 3×3), the CPU's fastest form ...")
        exporter.export_winograd(exporter.fp32_model("warping_spade"))
        log(f"        {exporter.rows[-1].error} ({exporter.rows[-1].seconds:.1f} s)")
    if grid_sample in ("4d", "both") and "warping_spade" in graphs:
        log("[+] warping_spade.gs4d.onnx: 5-D sampler as 4-D GridSamples ...")
        gs4d = exporter.export_gs4d(exporter.fp32_model("warping_spade"))
        log(f"        {exporter.rows[-1].error}")
        log("[+] warping.gs4d.onnx + spade_decoder.onnx: warping_spade split for mixed precision (OpenVINO) ...")
        exporter.export_split()
        log(f"        {exporter.rows[-2].error}; decoder {exporter.rows[-1].error}")
        for graph in COREML_GRAPHS:
            if graph in graphs:
                log(f"[+] {graph}.coreml.onnx: 3-D ops rewritten for CoreML ...")
                exporter.export_coreml(graph)
                log(f"        {exporter.rows[-1].error}")
        if precision in ("fp16", "both"):
            log("[+] warping_spade.gs4d.fp16.onnx ...")
            exporter.export_fp16("warping_spade.gs4d", "warping_spade", gs4d)
            log(f"        {exporter.rows[-1].error}")
    elif split and "warping_spade" in graphs:
        log("[+] warping.gs4d.onnx + spade_decoder.onnx: warping_spade split, the decoder in bf16 on OpenVINO "
            "(this CPU's fastest route) ...")
        exporter.export_split()
        log(f"        {exporter.rows[-2].error}; decoder {exporter.rows[-1].error}")
    if precision in ("fp16", "both"):
        for graph in FP16_GRAPHS:
            if graph in graphs:
                log(f"[+] {graph}.fp16.onnx: mixed precision, GridSample in fp32 ...")
                exporter.export_fp16(graph, graph, exporter.fp32_model(graph))
                log(f"        {exporter.rows[-1].error}")
    if animals:
        log(f"[+] {XPOSE_GRAPH}.onnx: X-Pose animal keypoint detector, dynamic H/W ...")
        exporter.export_xpose()
        log(f"        {exporter.rows[-1].error} ({exporter.rows[-1].seconds:.1f} s)")
        log(f"[+] {XPOSE_TEXT}.npz: CLIP text features ...")
        exporter.write_xpose_text(xpose_text)
        log(f"        {exporter.rows[-1].error}")
    log("[+] detector and landmark graphs ...")
    exporter.copy_face_graphs()
    log("[+] paste_back.onnx: warp + mask blend for the GPU, checked against the numpy paste-back ...")
    start = time.perf_counter()
    try:
        entry = export_paste_back(out)
    except ValueError as exc:
        raise ExportError(f"paste_back.onnx: {exc}") from exc
    exporter.entries[entry.key] = entry
    exporter.rows.append(Row(entry.file, entry.bytes, f"max {entry.parity['max_abs_levels_vs_numpy']:.0f} level "
                             "vs numpy", time.perf_counter() - start))
    path = exporter.write_manifest()
    log(format_table(exporter.rows))
    log(f"Manifest: {path}\nTotal export time: {time.perf_counter() - t0:.1f} s")
    return exporter.rows


def format_table(rows: list[Row]) -> str:
    """Summary: file, size, max-abs error, seconds."""
    head = f"{'file':<36} {'size':>10}  {'check':<44} {'time':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.file:<36} {r.bytes / 1e6:>8.1f}MB  {r.error:<44} {r.seconds:>6.1f}s")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the export subcommand (shared by cli.py)."""
    parser.add_argument("--weights", type=Path, default=Path("pretrained_weights"),
                        help="official weights tree (default: pretrained_weights)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: models_onnx, or models_onnx/liveportrait_animals with "
                             "--family liveportrait_animals)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "both"], default="fp32",
                        help="fp32 contract graphs always; fp16/both also write *.fp16.onnx GPU variants "
                             "(default: fp32)")
    parser.add_argument("--grid-sample", choices=["5d", "4d", "both"], default="5d", dest="grid_sample",
                        help="4d/both also write warping_spade.gs4d.onnx for CoreML/OpenVINO/TensorRT<=10, the "
                             "split pair and *.coreml.onnx (default: 5d)")
    parser.add_argument("--skip-winograd", action="store_false", dest="winograd",
                        help="do not write warping_spade.wino.onnx, the CPU execution provider's fastest warping "
                             "graph (saves ~1 min and 1.2 GB; the CPU then runs the plain graph, ~1.5x slower)")
    parser.add_argument("--split", choices=["auto", "yes", "no"], default="auto",
                        help="write warping.gs4d.onnx + spade_decoder.onnx, the OpenVINO bf16-decoder route that "
                             "--device auto runs on CPUs with AMX/AVX512-BF16; auto = when this machine would run "
                             "it (always with --grid-sample 4d/both) (default: auto)")
    parser.add_argument("--family", choices=["liveportrait", "liveportrait_animals"], default="liveportrait",
                        help="which model family of the weights tree to export (default: liveportrait)")
    parser.add_argument("--xpose-text", type=Path, default=None, dest="xpose_text",
                        help="animals: folder with the official clip_embedding_9.pkl / clip_embedding_68.pkl to "
                             "convert (default: pretrained_weights/liveportrait_animals/ when they are there, else "
                             "the copy shipped in export/assets/)")


def run(args: argparse.Namespace) -> int:
    """CLI entry: export and print a clear error (exit 1) instead of a traceback on expected failures."""
    from export.checkpoints import CheckpointError
    from export.xpose_text import TextError

    try:
        export_models(args.weights, args.out, args.precision, args.grid_sample, args.family,
                      winograd=args.winograd, xpose_text=args.xpose_text,
                      split={"auto": None, "yes": True, "no": False}[args.split])
    except (ExportError, CheckpointError, TextError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    return 0
