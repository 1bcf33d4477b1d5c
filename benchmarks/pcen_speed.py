"""CPU time per window of the default MelCNN by input norm, in torch eager and onnxruntime.

    python benchmarks/pcen_speed.py [--classes 206] [--batch 12] [--repeats 15]

The default net (`conf/model/melcnn.yaml`, 206 classes) on random 5-s log-mel windows of
the default front end (128 mels x 320 frames), one thread, batches of 12 (a file's
windows): `input_norm=dataset`, `pcen` as built (the smoothing filter as one matrix
product), and `pcen` with the same filter as a 1 x 354 convolution (how it was built until
2026-11-28), each exported to fp32 ONNX as `task=export` does. The three run side by side,
interleaved, and the medians of `--repeats` passes are reported (ms per window), with the
ratio to `dataset`. Also reports the largest difference between the two PCEN forms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from birdclef.models.layers import PCEN

ROOT = Path(__file__).resolve().parent.parent


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


def onnx_session(net: torch.nn.Module, example: torch.Tensor, folder: Path, name: str):
    import onnxruntime as ort

    path = folder / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (example,), str(path), dynamo=False, opset_version=17, input_names=["frames"],
            dynamic_axes={"frames": {0: "batch"}},
        )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]), path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=206)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, help="also write the results here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    windows = torch.randn(args.batch, 1, 128, 320, generator=torch.Generator().manual_seed(0))
    windows = windows * 12 - 55  # dB, about the front end's range on field audio
    variants = {
        "dataset": build("dataset", args.classes, conv=False),
        "pcen": build("pcen", args.classes, conv=False),
        "pcen as a convolution": build("pcen", args.classes, conv=True),
    }
    times: dict[str, list[float]] = {f"{n} {r}": [] for n in variants for r in ("eager", "onnx")}
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        sessions, sizes = {}, {}
        for name, net in variants.items():
            session, path = onnx_session(net, windows, Path(folder), name.replace(" ", "_"))
            sessions[name], sizes[name] = session, path.stat().st_size
        feed = {"frames": windows.numpy()}
        outputs = {name: net(windows) for name, net in variants.items()}  # warm-up (builds caches)
        for session in sessions.values():
            session.run(None, feed)
        for _ in range(args.repeats):  # interleaved, so that load changes hit every variant alike
            for name, net in variants.items():
                began = time.perf_counter()
                net(windows)
                times[f"{name} eager"].append(time.perf_counter() - began)
                began = time.perf_counter()
                sessions[name].run(None, feed)
                times[f"{name} onnx"].append(time.perf_counter() - began)
    ms = {k: 1000 * statistics.median(v) / args.batch for k, v in times.items()}
    diff = float((outputs["pcen"] - outputs["pcen as a convolution"]).abs().max())
    print(f"MelCNN, {args.classes} classes, batches of {args.batch} windows, 1 thread, "
          f"median of {args.repeats} (ms per window)")  # fmt: skip
    print("| input norm | torch eager | x dataset | onnxruntime fp32 | x dataset | ONNX bytes |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in variants:
        eager, ort_ms = ms[f"{name} eager"], ms[f"{name} onnx"]
        print(
            f"| {name} | {eager:.2f} | {eager / ms['dataset eager']:.2f} | {ort_ms:.2f} | "
            f"{ort_ms / ms['dataset onnx']:.2f} | {sizes[name]:,} |"
        )
    print(f"largest score difference between the two PCEN forms: {diff:.1e}")
    if args.out:
        args.out.write_text(
            json.dumps({"ms_per_window": ms, "onnx_bytes": sizes, "max_diff": diff}, indent=1)
        )


if __name__ == "__main__":
    main()
