"""Rewrite large-kernel convolutions of an ONNX graph as tiled Fourier convolutions for the CPU execution provider.

The warping network's 7×7×7 mask convolution (run as a 7×7 2-D convolution over the 16 depth slices, 142 → 7·22
channels) is ~70 GMAC a frame and the CPU EP already runs it near the CPU's fp32 peak, so only fewer products make
it faster. A k×k correlation over a tile of n = m + k − 1 input pixels equals, for its first m×m outputs, the
circular correlation of length n, which the discrete Fourier transform diagonalises: with m = 16, k = 7 (n = 22)
each 16×16 output tile needs 22×12 complex products per channel pair (the real input's spectrum is Hermitian)
instead of 256·49 real ones, ~12× fewer multiplications. Written with standard ops (every runtime loads it):

* forward transform along W: a strided depthwise Conv (kernel 1×n, stride m) with the cos/−sin rows of the real
  DFT: 2·(n/2 + 1) real values per row of every tile;
* forward transform along H: a grouped Conv (kernel n×1, stride m), one group per (channel, W-frequency) holding
  its real and imaginary parts: the full complex DFT;
* the products: one batched MatMul over the n·(n/2 + 1) frequencies, each a (2K × 2C)·(2C × tiles) real GEMM
  holding the complex product with the conjugate kernel spectrum (computed at export in float64, stored);
* inverse transforms: two MatMuls (H, then W) on the GEMM output as it is laid out, then two Transposes put
  every tile's rows and columns in place and the bias is added. The first version (a layout Transpose of the
  spectra, then two grouped ConvTransposes with their per-element col2im) took 105 ms a frame, this one 35 ms
  (2-core Xeon, batch 1).

Exact in real arithmetic; in fp32 the result differs from direct convolution by ~1e-6 of the output scale
(orthogonal transforms keep the rounding small). Only stride-1, dilation-1, ungrouped k×k convolutions (k odd ≥ 5)
with padding (k − 1)/2, spatial sizes divisible by m and at least `min_out_channels` outputs are rewritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from export.winograd import (
    Constants,
    conv_bias,
    conv_input_shapes,
    conv_weight,
    copy_with_batch,
    is_plain_conv,
    replace_nodes,
)

__all__ = ["FourierReport", "fourier_convs", "fourier_spectrum"]

TILE = 16  # output tile m


@dataclass
class FourierReport:
    """What the pass did, for the export log and the manifest."""

    rewritten: int
    gmac_before: float  # multiply-accumulates per graph batch item of the rewritten convolutions, direct form
    gmac_after: float  # the same convolutions' frequency-domain GEMM work


def _eligible(node: onnx.NodeProto, weight: np.ndarray | None, in_shape: list | None, tile: int,
              min_out_channels: int) -> bool:
    if node.op_type != "Conv" or weight is None or weight.ndim != 4 or in_shape is None or len(in_shape) != 4:
        return False
    k = int(weight.shape[2])
    if weight.shape[3] != k or k < 5 or k % 2 == 0 or weight.shape[0] < min_out_channels:
        return False
    if not is_plain_conv(node, (k - 1) // 2):
        return False
    return in_shape[2] % tile == 0 and in_shape[3] % tile == 0


def _frequencies(n: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(number of W frequencies n/2 + 1, their angles 2π·f·x/n for x < n, the Hermitian weights of the inverse)."""
    half = n // 2 + 1
    angles = 2 * np.pi * np.outer(np.arange(half), np.arange(n)) / n
    weights = np.full(half, 2.0)
    weights[0] = 1.0
    if n % 2 == 0:
        weights[-1] = 1.0
    return half, angles, weights


def fourier_spectrum(weight: np.ndarray, n: int) -> np.ndarray:
    """Per frequency (f1 over H: n, f2 over W: n/2 + 1) the real 2K×2C matrix of Z = Σ_c D_c·conj(W_kc), float32.

    Rows are (real, imaginary) × K, columns (real, imaginary) × C, as the graph lays out the spectra."""
    k_out, c_in, k, _ = weight.shape
    padded = np.zeros((k_out, c_in, n, n))
    padded[:, :, :k, :k] = weight.astype(np.float64)
    spec = np.fft.rfft2(padded)  # K×C×n×(n/2+1)
    wr, wi = spec.real.transpose(3, 2, 0, 1), spec.imag.transpose(3, 2, 0, 1)  # f2×f1×K×C
    # Zr = Dr·Wr + Di·Wi, Zi = Di·Wr − Dr·Wi
    top = np.concatenate([wr, wi], axis=3)
    bottom = np.concatenate([-wi, wr], axis=3)
    big = np.concatenate([top, bottom], axis=2)  # f2×f1×2K×2C
    return big.reshape(-1, 2 * k_out, 2 * c_in).astype(np.float32)


def _forward_kernels(c: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Depthwise W-transform kernel (C·2·half, 1, 1, n) and grouped H-transform kernel (C·half·2n, 2, n, 1)."""
    half, angles, _ = _frequencies(n)
    rows = np.stack([np.cos(angles), -np.sin(angles)], axis=1).reshape(half * 2, 1, 1, n)  # (f2, re/im)
    w_kernel = np.tile(rows, (c, 1, 1, 1))
    full = 2 * np.pi * np.outer(np.arange(n), np.arange(n)) / n  # f1 × h
    cos, sin = np.cos(full), np.sin(full)
    # X = Σ_h e^{-iθ}(R + iI): Xr = cos·R + sin·I, Xi = cos·I − sin·R; outputs (f1, re/im), inputs (R, I)
    h = np.stack([np.stack([cos, sin], axis=1), np.stack([-sin, cos], axis=1)], axis=1)  # f1 × 2 × 2 × h
    h_kernel = np.tile(h.reshape(n * 2, 2, n, 1), (c * half, 1, 1, 1))
    return w_kernel.astype(np.float32), h_kernel.astype(np.float32)


def _inverse_matrices(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The inverse transform as two matrices: along H (2m × 2n) from (f1, re/im of Z) to (re/im of U, row i),
    along W (m × 2·half) from (f2, re/im of U) to column j, with the Hermitian weights and 1/n² folded in."""
    half, _, weights = _frequencies(n)
    full = 2 * np.pi * np.outer(np.arange(n), np.arange(m)) / n  # f1 × i
    cos, sin = np.cos(full).T, np.sin(full).T  # i × f1
    # U = Σ_f1 e^{+iθ} Z: Ur = cos·Zr − sin·Zi, Ui = sin·Zr + cos·Zi
    h = np.stack([np.stack([cos, -sin], axis=2), np.stack([sin, cos], axis=2)], axis=0)  # (Ur,Ui) × i × f1 × (Zr,Zi)
    angles = 2 * np.pi * np.outer(np.arange(half), np.arange(m)) / n  # f2 × j
    # y = Σ_f2 c_f2 (cos·Ur − sin·Ui) / n²
    w = np.stack([np.cos(angles), -np.sin(angles)], axis=1) * weights[:, None, None] / (n * n)  # f2 × 2 × j
    return h.reshape(2 * m, 2 * n).astype(np.float32), w.reshape(2 * half, m).T.astype(np.float32).copy()


def fourier_convs(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]], tile: int = TILE,
                  min_out_channels: int = 16) -> tuple[onnx.ModelProto, FourierReport]:
    """A copy of `model` whose eligible large-kernel convolutions run as tiled Fourier convolutions.

    `input_shapes` pins the graph inputs (their first dimension is the batch) so shape inference sizes every
    convolution; convolutions over a folded batch (3-D ones over depth slices) qualify too: their slices join
    the GEMM columns."""
    model, batch = copy_with_batch(model, input_shapes)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    large = {i.name for i in graph.initializer if len(i.dims) == 4 and i.dims[2] == i.dims[3] and i.dims[2] >= 5}
    shapes = conv_input_shapes(model, input_shapes, kernels=large)
    const = Constants()
    nodes: list[onnx.NodeProto] = []
    report = FourierReport(0, 0.0, 0.0)

    for node in graph.node:
        weight = conv_weight(node, inits)
        in_shape = shapes.get(node.input[0])
        if not _eligible(node, weight, in_shape, tile, min_out_channels):
            nodes.append(node)
            continue
        k_out, c, k, _ = weight.shape
        pad, n, m = (k - 1) // 2, tile + k - 1, tile
        half = n // 2 + 1
        _, _, h, w = in_shape
        th, tw = h // m, w // m
        p = (node.name or node.output[0]) + "/fourier"
        bias = conv_bias(node, inits, k_out)
        fw, fh = _forward_kernels(c, n)
        ih, iw = _inverse_matrices(n, m)
        bins = n * half
        nodes += [
            # rows: every tile's real DFT along W (the tile grid's padding included), channels (c, f2, re/im)
            helper.make_node("Conv", [node.input[0], const(f"fourier/fw_{c}x{n}", fw)], [f"{p}/w"], name=f"{p}/w",
                             kernel_shape=[1, n], strides=[1, m], pads=[pad, pad, pad, pad], group=c),
            # columns: complex DFT along H per (c, f2): channels (c, f2, f1, re/im), spatial (th, tw)
            helper.make_node("Conv", [f"{p}/w", const(f"fourier/fh_{c}x{n}", fh)], [f"{p}/x"], name=f"{p}/h",
                             kernel_shape=[n, 1], strides=[m, 1], group=c * half),
            helper.make_node("Reshape", [f"{p}/x", const(f"fourier/shape_x_{c}x{n}x{th}x{tw}",
                                                         np.array([-1, c, half, n, 2, th * tw], np.int64))],
                             [f"{p}/x6"], name=f"{p}/x6"),
            helper.make_node("Transpose", [f"{p}/x6"], [f"{p}/x_t"], name=f"{p}/x_t", perm=[2, 3, 4, 1, 0, 5]),
            helper.make_node("Reshape", [f"{p}/x_t", const(f"fourier/shape_cols_{c}x{n}",
                                                           np.array([bins, 2 * c, -1], np.int64))],
                             [f"{p}/v"], name=f"{p}/v"),
            helper.make_node("MatMul", [const(f"{p}/spectrum", fourier_spectrum(weight, n)), f"{p}/v"], [f"{p}/z"],
                             name=f"{p}/gemm"),
            # inverse along H: Z seen as half × (f1, re/im) × (K, slices, tiles) times the H matrix, no transpose
            helper.make_node("Reshape", [f"{p}/z", const(f"fourier/shape_z_rows_{n}",
                                                         np.array([half, 2 * n, -1], np.int64))],
                             [f"{p}/z_rows"], name=f"{p}/z_rows"),
            helper.make_node("MatMul", [const(f"fourier/ih_{n}x{m}", ih), f"{p}/z_rows"], [f"{p}/u"], name=f"{p}/ih"),
            # inverse along W: U seen as (f2, re/im) × (i, K, slices, tiles) gives j × i × K × slices × tiles
            helper.make_node("Reshape", [f"{p}/u", const(f"fourier/shape_u_rows_{n}",
                                                         np.array([2 * half, -1], np.int64))],
                             [f"{p}/u_rows"], name=f"{p}/u_rows"),
            helper.make_node("MatMul", [const(f"fourier/iw_{n}x{m}", iw), f"{p}/u_rows"], [f"{p}/y_ji"],
                             name=f"{p}/iw"),
            # every tile's row i and column j into place: column j innermost first (a 2-D transpose; onnxruntime's
            # general 6-D permutation measured 4× slower than both steps), then a permutation of 64-byte blocks
            helper.make_node("Reshape", [f"{p}/y_ji", const(f"fourier/shape_y_j_{m}", np.array([m, -1], np.int64))],
                             [f"{p}/y_j"], name=f"{p}/y_j"),
            helper.make_node("Transpose", [f"{p}/y_j"], [f"{p}/y_j_last"], name=f"{p}/y_j_last", perm=[1, 0]),
            helper.make_node("Reshape", [f"{p}/y_j_last", const(f"fourier/shape_y_{k_out}x{m}x{th}x{tw}",
                                                                np.array([m, k_out, -1, th, tw, m], np.int64))],
                             [f"{p}/y6"], name=f"{p}/y6"),
            helper.make_node("Transpose", [f"{p}/y6"], [f"{p}/y_t"], name=f"{p}/y_t", perm=[2, 1, 3, 0, 4, 5]),
            helper.make_node("Reshape", [f"{p}/y_t", const(f"fourier/shape_out_{k_out}x{h}x{w}",
                                                           np.array([-1, k_out, h, w], np.int64))],
                             [f"{p}/y_nobias"], name=f"{p}/y_nobias"),
            helper.make_node("Add", [f"{p}/y_nobias", const(f"{p}/bias", bias.reshape(k_out, 1, 1))],
                             [node.output[0]], name=f"{p}/bias"),
        ]
        items = in_shape[0] // batch if in_shape[0] % batch == 0 else 1
        report.rewritten += 1
        report.gmac_before += items * h * w * k_out * c * k * k / 1e9
        report.gmac_after += items * th * tw * bins * 4 * k_out * c / 1e9

    replace_nodes(graph, nodes, const)
    return model, report
