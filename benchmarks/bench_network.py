"""Forward speed of AASN against Vanilla DenseNet-121, and their FLOP rate against this machine's matmul rate.

Prints, in one run, for each execution format and batch size: median forward time of Vanilla and AASN at the paper's
ROI size (256 x 512, eval mode, ``forward`` = heatmap only), the AASN / Vanilla ratio (goal <= 1.95: stages 1-3 run
on two streams, so about 1.9 is the floor), and each model's FLOP rate (FLOPs from ``torch.utils.flop_counter``:
convolutions and matmuls, 2 per multiply-add) as a fraction of a measured large fp32 matmul rate (goal >= 70 %).

The matmul reference is the faster of two large GEMMs: ``torch.mm`` of 4096 x 4096 matrices (BLAS) and the same GEMM
as a 1x1 convolution (4096 -> 4096 channels over 64 x 64 pixels, channels-last: oneDNN, the library that runs the
networks' convolutions on CPU).

Each configuration runs ``--warmup`` + ``--repeats`` rounds of (reference GEMMs, Vanilla forward, AASN forward) back
to back; the ratio and the matmul fractions are medians over rounds of values taken within one round, so that a burst
of load from other processes on a shared machine affects numerator and denominator alike. A "best-of" line follows
with the same figures from each quantity's minimum time (the least disturbed run).

Formats: ``nchw`` (contiguous weights and input), ``channels_last`` (what ``build_network`` returns), ``frozen``
(TorchScript of the channels-last model, frozen and ``optimize_for_inference``: conv-BatchNorm folding, fusions),
``folded`` (the eager channels-last model with the BatchNorms that follow a convolution folded into it,
``scripts.fracture.folding.fold_batchnorm``, what ``inference.json``'s ``fold_batchnorm`` runs).

    python benchmarks/bench_network.py                              # CPU: all formats, batch 1 and 8
    python benchmarks/bench_network.py --formats channels_last --repeats 5 --json out.json
    python benchmarks/bench_network.py --device cuda --amp          # GPU, fp16 autocast
    python benchmarks/bench_network.py --device cuda --amp-check --formats   # AMP training step vs fp32 only

Keep runs short on shared machines. On an oversubscribed machine two OpenMP threads stall each other at every
barrier; ``--threads 1`` then gives steadier ratios and fractions (the reference GEMMs run on one thread too).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

import results_metadata  # noqa: E402  (benchmarks/, this script's folder)

from scripts.fracture.losses import loss_for_variant  # noqa: E402
from scripts.fracture.networks import build_network  # noqa: E402

FORMATS = ("nchw", "channels_last", "frozen", "folded")
MODELS = ("vanilla", "aasn")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def siamese_input(batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """Random ROIs and a mildly rotated, shifted sampling grid (a stand-in for a TPS grid)."""
    generator = torch.Generator().manual_seed(batch)
    images = torch.rand(batch, 6, height, width, generator=generator)
    ys = (2 * torch.arange(height) + 1) / height - 1
    xs = (2 * torch.arange(width) + 1) / width - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    angle = torch.tensor(0.03)
    grid = torch.stack([gx * angle.cos() - gy * angle.sin() + 0.02, gx * angle.sin() + gy * angle.cos()])
    return torch.cat([images, grid[None].expand(batch, 2, height, width)], dim=1).to(device)


class ReferenceGemm:
    """The two large GEMMs of the matmul reference; ``rate()`` times both and returns the faster FLOP/s."""

    def __init__(self, device: torch.device, size: int, dtype: torch.dtype) -> None:
        self.device, self.flops = device, 2 * size**3
        self.a = torch.randn(size, size, device=device, dtype=dtype)
        self.b = torch.randn(size, size, device=device, dtype=dtype)
        side = int(round(size**0.5))
        self.x = torch.randn(1, size, side, side, device=device, dtype=dtype).contiguous(
            memory_format=torch.channels_last
        )
        self.w = torch.randn(size, size, 1, 1, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        self.conv_flops = 2 * size * size * side * side

    def rate(self) -> dict[str, float]:
        mm = self.flops / timed(lambda: torch.mm(self.a, self.b), self.device)
        conv = self.conv_flops / timed(lambda: F.conv2d(self.x, self.w), self.device)
        return {"mm": mm, "conv1x1": conv, "best": max(mm, conv)}


def count_flops(net: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    return int(counter.get_total_flops())


def prepare(name: str, fmt: str, device: torch.device, **network_kwargs) -> torch.nn.Module:
    """Network ``name`` (seeded; ``network_kwargs`` as ``build_network``'s, default DenseNet-121) in format ``fmt``."""
    torch.manual_seed(0)
    net = build_network(name, channels_last=fmt != "nchw", **network_kwargs).to(device).eval()
    if fmt == "frozen":
        with torch.no_grad():
            net = torch.jit.optimize_for_inference(torch.jit.script(net))
    elif fmt == "folded":
        from scripts.fracture.folding import fold_batchnorm

        net = fold_batchnorm(net)
    return net


def interleaved_rounds(models, x, reference, device, warmup: int, repeats: int, autocast) -> list[dict]:
    """Rounds of (reference GEMMs, Vanilla forward, AASN forward), back to back."""
    rounds = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            times = {"reference": reference.rate()}
            for name, model in models.items():
                with autocast():
                    times[name] = timed(lambda model=model: model(x), device)
            if i >= warmup:
                rounds.append(times)
    return rounds


def summarise(rounds: list[dict], flops: dict[str, int], batch: int) -> dict:
    row = {"matmul_gflops": statistics.median(r["reference"]["best"] for r in rounds) / 1e9}
    for name in MODELS:
        row[f"{name}_s"] = statistics.median(r[name] for r in rounds)
        row[f"{name}_matmul_fraction"] = statistics.median(
            flops[name] * batch / r[name] / r["reference"]["best"] for r in rounds
        )
    row["ratio"] = statistics.median(r["aasn"] / r["vanilla"] for r in rounds)
    best_reference = max(r["reference"]["best"] for r in rounds)
    best = {name: min(r[name] for r in rounds) for name in MODELS}
    row["best"] = {
        "matmul_gflops": best_reference / 1e9,
        "ratio": best["aasn"] / best["vanilla"],
        **{f"{name}_s": best[name] for name in MODELS},
        **{f"{name}_matmul_fraction": flops[name] * batch / best[name] / best_reference for name in MODELS},
    }
    return row


def print_row(label: str, batch: int, row: dict) -> None:
    print(
        f"{label:14s} {batch:5d} {row['matmul_gflops']:14.1f} {row['vanilla_s']:10.3f} {row['aasn_s']:10.3f} "
        f"{row['ratio']:6.2f} {100 * row['vanilla_matmul_fraction']:10.1f}% {100 * row['aasn_matmul_fraction']:8.1f}%",
        flush=True,
    )


def amp_check(device: torch.device, dtype: torch.dtype, height: int, width: int) -> dict:
    """One AASN training step (forward_with_distance, AASNLoss, backward) under autocast vs float32."""
    torch.manual_seed(0)
    net = build_network("aasn").to(device).train()
    x = siamese_input(2, height, width, device)
    target = torch.zeros(2, 2, height, width, device=device)
    target[0, :, height // 4 : height // 2, width // 4 : width // 2] = 1.0
    loss_fn = loss_for_variant("aasn")
    results = {}
    for name, context in (("fp32", nullcontext()), ("amp", torch.autocast(device.type, dtype=dtype))):
        net.zero_grad()
        with context:
            heatmap, distance = net.forward_with_distance(x)
            loss = loss_fn((heatmap, distance), target)
        loss.backward()
        grads = torch.cat([p.grad.flatten().float() for p in net.parameters() if p.grad is not None])
        results[name] = {
            "loss": loss.item(),
            "heatmap_dtype": str(heatmap.dtype),
            "distance_dtype": str(distance.dtype),
            "finite": bool(torch.isfinite(grads).all() and torch.isfinite(loss)),
            "grad_norm": grads.norm().item(),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--formats", nargs="*", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--amp", action="store_true", help="time under autocast (bf16 on CPU, fp16 on CUDA)")
    parser.add_argument("--amp-check", action="store_true", help="compare an AMP training step with float32")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, one per core)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    meta = results_metadata.start(results_metadata.command_line(__file__))
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    dtype = amp_dtype if args.amp else torch.float32
    cpu = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    results: dict = {
        "command": " ".join(["python", *sys.argv]),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "input": [args.height, args.width],
        "dtype": str(dtype),
    }
    print(f"# {results['device']}, torch {torch.__version__}, input {args.height} x {args.width}, {dtype}")
    if args.amp_check:
        results["amp_check"] = amp_check(device, amp_dtype, args.height, args.width)
        print("AMP check:", json.dumps(results["amp_check"], indent=1))

    if args.formats:
        reference = ReferenceGemm(device, args.matmul_size, dtype)
        autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if args.amp else nullcontext
        probe = {name: build_network(name).to(device).eval() for name in MODELS}
        one = siamese_input(1, args.height, args.width, device)
        flops = {name: count_flops(net, one) for name, net in probe.items()}
        del probe
        results["gflops_per_image"] = {name: f / 1e9 for name, f in flops.items()}
        print("GFLOP per image: " + ", ".join(f"{n} {f / 1e9:.2f}" for n, f in flops.items()))
        print(
            f"{'format':14s} {'batch':>5s} {'matmul GFLOP/s':>14s} {'vanilla s':>10s} {'aasn s':>10s} {'ratio':>6s} "
            f"{'vanilla %mm':>11s} {'aasn %mm':>9s}   (medians over {args.repeats} rounds)"
        )
        rows = []
        for fmt in args.formats:
            models = {name: prepare(name, fmt, device) for name in MODELS}
            for batch in args.batches:
                x = siamese_input(batch, args.height, args.width, device)
                rounds = interleaved_rounds(models, x, reference, device, args.warmup, args.repeats, autocast)
                row = {"format": fmt, "batch": batch, **summarise(rounds, flops, batch), "rounds": rounds}
                rows.append(row)
                print_row(fmt, batch, row)
                print_row("  best-of", batch, row["best"])
        results["rows"] = rows
    results["provenance"] = results_metadata.finish(meta)
    print("\n".join(results_metadata.markdown_lines(results["provenance"])))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
