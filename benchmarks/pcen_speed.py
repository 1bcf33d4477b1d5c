"""CPU time per window of the default MelCNN by input norm, in torch eager and onnxruntime.

    python benchmarks/pcen_speed.py [--classes 206] [--batch 12] [--repeats 15] [--out PATH]

The default net (`conf/model/melcnn.yaml`, 206 classes) on random 5-s log-mel windows of
the default front end (128 mels x 320 frames), one thread, batches of 12 (a file's
windows): `input_norm=dataset`, `pcen` as built (the smoothing filter as one matrix
product), and `pcen` with the same filter as a 1 x 354 convolution (how it was built until
2026-11-28), each exported to fp32 ONNX as `task=export` does. The three run side by side,
interleaved, and the medians of `--repeats` passes are reported (ms per window), with the
ratio to `dataset`. Also reports the largest difference between the two PCEN forms.
"""

from __future__ import annotations

import tempfile
import warnings
from functools import partial
from pathlib import Path

import harness
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from birdclef.models.layers import PCEN

ROOT = Path(__file__).resolve().parent.parent
N_MELS, N_FRAMES = 128, 320  # the default front end's 5-s window
DB_MEAN, DB_SPREAD = -55, 12  # dB: random windows in about the front end's range on field audio
MS = 1000  # ms per s


def conv_forward(self: PCEN, x: torch.Tensor) -> torch.Tensor:
    """PCEN with its smoother as a convolution over replicate-padded frames (until 2026-11-28)."""
    energy = torch.pow(10.0, x / 10.0)
    padded = torch.nn.functional.pad(energy, (self.kernel.shape[-1] - 1, 0, 0, 0), mode="replicate")
    smooth = torch.nn.functional.conv2d(padded, self.kernel)
    ratio = energy / (self.eps + smooth) ** self.gain
    return (ratio + self.bias) ** self.power - self.bias**self.power


def build(input_norm: str, classes: int, conv: bool) -> torch.nn.Module:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"model.input_norm={input_norm}"])
    torch.manual_seed(0)
    net = instantiate(cfg.model, num_classes=classes).eval()
    if conv:
        for module in net.modules():
            if isinstance(module, PCEN):
                module.forward = conv_forward.__get__(module)
    return net


def onnx_session(
    net: torch.nn.Module, example: torch.Tensor, folder: Path, name: str, threads: int
):
    import onnxruntime as ort

    path = folder / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (example,), str(path), dynamo=False, opset_version=17, input_names=["frames"],
            dynamic_axes={"frames": {0: "batch"}},
        )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]), path


def time_nets(nets: dict, windows: torch.Tensor, args) -> tuple[dict, dict]:
    """ms per window of each net in eager and onnxruntime, interleaved, and the ONNX files' sizes."""
    with tempfile.TemporaryDirectory() as folder:
        sessions, sizes = {}, {}
        for name, net in nets.items():
            sessions[name], path = onnx_session(
                net, windows, Path(folder), name.replace(" ", "_"), args.threads
            )
            sizes[name] = path.stat().st_size
        feed = {"frames": windows.numpy()}
        variants = {}
        for name, net in nets.items():
            variants[f"{name} eager"] = partial(net, windows)
            variants[f"{name} onnx"] = partial(sessions[name].run, None, feed)
        times = harness.interleave(variants, args.repeats, args.warmup)
    ms = {}
    for runtime in ("eager", "onnx"):
        part = {k: v for k, v in times.items() if k.endswith(runtime)}
        ms |= harness.compare(part, f"dataset {runtime}", per=args.batch / MS)
    return ms, sizes


def main() -> None:
    parser = harness.parser(__doc__, __file__, repeats=15, warmup=1, threads=1)
    parser.add_argument("--classes", type=int, default=206)
    parser.add_argument("--batch", type=int, default=12)
    args = parser.parse_args()
    windows = torch.randn(
        args.batch, 1, N_MELS, N_FRAMES, generator=torch.Generator().manual_seed(0)
    )
    windows = windows * DB_SPREAD + DB_MEAN
    nets = {
        "dataset": build("dataset", args.classes, conv=False),
        "pcen": build("pcen", args.classes, conv=False),
        "pcen as a convolution": build("pcen", args.classes, conv=True),
    }
    with harness.cpu_share(args.threads), torch.inference_mode():
        ms, sizes = time_nets(nets, windows, args)
        diff = float((nets["pcen"](windows) - nets["pcen as a convolution"](windows)).abs().max())
        rows = []
        for name in nets:
            eager, onnx = ms[f"{name} eager"], ms[f"{name} onnx"]
            rows.append((name, f"{eager['median']:.2f}", f"{eager['ratio']:.2f}",
                         f"{onnx['median']:.2f}", f"{onnx['ratio']:.2f}", f"{sizes[name]:,}"))  # fmt: skip
        columns = ["input norm", "torch eager", "x dataset", "onnxruntime fp32", "x dataset",
                   "ONNX bytes"]  # fmt: skip
        text = (
            f"MelCNN, {args.classes} classes, batches of {args.batch} windows, {args.threads} "
            f"thread(s), median of {args.repeats} (ms per window)\n\n"
            + harness.markdown_table(columns, rows)
            + f"\n\nlargest score difference between the two PCEN forms: {diff:.1e}"
        )
        data = {"ms_per_window": {k: v["median"] for k, v in ms.items()}, "timings_ms": ms,
                "onnx_bytes": sizes, "max_diff": diff}  # fmt: skip
        harness.report(args.out, text, data)


if __name__ == "__main__":
    harness.run(main)
