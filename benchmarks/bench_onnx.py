"""Would ONNX Runtime score the students faster than torch on this CPU? The CPU recipe's students (random weights:
speed does not depend on them), exported with torch.onnx and run by onnxruntime (float32; its CPU provider has no
bf16 kernels for these convolutions), against torch in float32 and under bf16 autocast with channels_last (what
`vad score` runs). The forward pass alone, batch 16 at 128x128 (appearance: 6 channels; motion: the frame and its
context), 2 threads, the median of --repeats timed calls after a warm-up; and the largest difference between
onnxruntime's output and torch's (float32).

    pip install onnxruntime onnx    # not a dependency of vad: only this benchmark needs them
    python benchmarks/bench_onnx.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mtvad.students.branches import BRANCHES, channels_last, get_branch  # noqa: E402
from mtvad.students.config import CPU_APPEARANCE_ENCODER, CPU_MOTION_ENCODER, TrainConfig  # noqa: E402
from mtvad.students.device import precision_for  # noqa: E402


def inputs(branch: str, batch: int, size: int) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    if branch == "appearance":
        return (torch.randn(batch, 6, size, size),)
    return torch.randn(batch, 3, size, size), torch.rand(batch, 3, size, size)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    config = TrainConfig()
    config.appearance.encoder, config.motion.encoder = CPU_APPEARANCE_ENCODER, CPU_MOTION_ENCODER
    precision = precision_for(torch.device("cpu"), "auto")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    print(f"| batch {args.batch}, {args.size}x{args.size}, {args.threads} threads, frames/s | torch float32 | "
          f"torch {precision.name}, channels_last | onnxruntime {ort.__version__} float32 |\n|---|---|---|---|")
    for name in BRANCHES:
        branch = get_branch(name)
        model = branch.build_model(config, 2).eval()
        x = inputs(name, args.batch, args.size)
        with torch.inference_mode():
            fp32 = timed(lambda: model(*x), args.repeats)
            fast = channels_last(branch.build_model(config, 2).eval())
            fast.load_state_dict(model.state_dict())
            bf16 = timed(lambda: branch.predict(fast, x, precision.autocast()), args.repeats)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.onnx"
            names = [f"input{i}" for i in range(len(x))]
            torch.onnx.export(model, x, str(path), input_names=names, dynamo=False)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feed = {n: t.numpy() for n, t in zip(names, x)}
            onnx = timed(lambda: session.run(None, feed), args.repeats)
            with torch.inference_mode():
                diff = (torch.from_numpy(session.run(None, feed)[0]) - model(*x)).abs().max().item()
        rate = lambda s: f"{args.batch / s:.1f}"  # noqa: E731
        print(f"| {name} | {rate(fp32)} | {rate(bf16)} | {rate(onnx)} (largest difference to torch {diff:.1e}) |",
              flush=True)


if __name__ == "__main__":
    main()
