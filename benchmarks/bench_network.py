"""Forward speed of AASN against Vanilla DenseNet-121, and their FLOP rate against this machine's matmul rate.

Prints, in one run, for each execution format and batch size: median forward time of Vanilla and AASN at the paper's
ROI size (256 x 512, eval mode, ``forward`` = heatmap only), the AASN / Vanilla ratio (goal <= 1.95: stages 1-3 run
on two streams, so about 1.9 is the floor), and each model's FLOP rate (FLOPs from ``torch.utils.flop_counter``:
convolutions and matmuls, 2 per multiply-add) as a fraction of a measured large fp32 matmul rate (goal >= 70 %).

Each configuration runs ``--warmup`` + ``--repeats`` rounds of (4096^2 matmul, Vanilla forward, AASN forward) back to
back; the ratio and the matmul fractions are medians over rounds of values taken within one round, so that a burst of
load from other processes on a shared machine affects numerator and denominator alike.

Formats: ``eager`` (NCHW), ``channels_last`` (model and input NHWC), ``frozen`` (TorchScript, frozen and
``optimize_for_inference``: conv-BatchNorm folding and oneDNN fusions on CPU).

    python benchmarks/bench_network.py                       # CPU, all formats, batch 1 and 8
    python benchmarks/bench_network.py --formats channels_last --repeats 5 --json out.json
    python benchmarks/bench_network.py --device cuda --amp   # GPU: bf16/fp16 autocast timings
    python benchmarks/bench_network.py --device cuda --amp-check --formats  # AMP training step vs fp32, no timing

Keep runs short on shared machines: each configuration runs ``--warmup`` + ``--repeats`` forwards.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from scripts.losses import loss_for_variant  # noqa: E402
from scripts.networks import build_network  # noqa: E402

FORMATS = ("eager", "channels_last", "frozen")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def siamese_input(batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """Random ROIs and a mildly rotated/shifted sampling grid (a realistic TPS stand-in)."""
    generator = torch.Generator().manual_seed(batch)
    images = torch.rand(batch, 6, height, width, generator=generator)
    ys = (2 * torch.arange(height) + 1) / height - 1
    xs = (2 * torch.arange(width) + 1) / width - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    angle = torch.tensor(0.03)
    grid = torch.stack([gx * angle.cos() - gy * angle.sin() + 0.02, gx * angle.sin() + gy * angle.cos()])
    return torch.cat([images, grid[None].expand(batch, 2, height, width)], dim=1).to(device)


def matmul_operands(device: torch.device, size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)


def timed(fn, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def count_flops(net: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    return int(counter.get_total_flops())


def prepare(net: torch.nn.Module, fmt: str, x: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
    if fmt == "channels_last":
        return net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if fmt == "frozen":
        with torch.inference_mode(False), torch.no_grad():
            frozen = torch.jit.optimize_for_inference(torch.jit.script(net))
        return frozen, x
    return net, x


def interleaved_rounds(models, inputs, matmul, device, warmup: int, repeats: int, autocast) -> list[dict]:
    """Rounds of (large matmul, Vanilla forward, AASN forward), back to back.

    On a shared machine the load changes from second to second; ratios taken within a round compare runs made under
    the same load, and their median is robust to bursts.
    """
    a, b = matmul
    rounds = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            times = {"matmul": timed(lambda: torch.mm(a, b), device)}
            for name, model in models.items():
                with autocast():
                    times[name] = timed(lambda: model(inputs[name]), device)
            if i >= warmup:
                rounds.append(times)
    return rounds


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
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    device = torch.device(args.device)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    dtype = amp_dtype if args.amp else torch.float32
    results: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads",
        "input": [args.height, args.width],
        "dtype": str(dtype),
    }
    print(f"# {results['device']}, torch {torch.__version__}, input {args.height} x {args.width}, {dtype}")
    if args.amp_check:
        results["amp_check"] = amp_check(device, amp_dtype, args.height, args.width)
        print("AMP check:", json.dumps(results["amp_check"], indent=1))

    if args.formats:
        matmul = matmul_operands(device, args.matmul_size, dtype)
        matmul_flops = 2 * args.matmul_size**3
        autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if args.amp else nullcontext
        nets = {name: build_network(name).to(device).eval() for name in ("vanilla", "aasn")}
        flops = {name: count_flops(net, siamese_input(1, args.height, args.width, device)) for name, net in nets.items()}
        results["gflops_per_image"] = {name: f / 1e9 for name, f in flops.items()}
        print("GFLOP per image: " + ", ".join(f"{n} {f / 1e9:.2f}" for n, f in flops.items()))
        print(
            f"{'format':14s} {'batch':>5s} {'matmul GFLOP/s':>14s} {'vanilla s':>10s} {'aasn s':>10s} {'ratio':>6s} "
            f"{'vanilla %mm':>11s} {'aasn %mm':>9s}   (medians over {args.repeats} rounds)"
        )
        rows = []
        for fmt in args.formats:
            for batch in args.batches:
                x = siamese_input(batch, args.height, args.width, device)
                models, inputs = {}, {}
                for name, net in nets.items():
                    models[name], inputs[name] = prepare(net, fmt, x)
                rounds = interleaved_rounds(models, inputs, matmul, device, args.warmup, args.repeats, autocast)
                if fmt == "channels_last":
                    for net in nets.values():
                        net.to(memory_format=torch.contiguous_format)
                row = {"format": fmt, "batch": batch, "rounds": rounds}
                row["matmul_gflops"] = statistics.median(matmul_flops / r["matmul"] / 1e9 for r in rounds)
                for name in nets:
                    row[f"{name}_s"] = statistics.median(r[name] for r in rounds)
                    row[f"{name}_matmul_fraction"] = statistics.median(
                        (flops[name] * batch / r[name]) / (matmul_flops / r["matmul"]) for r in rounds
                    )
                row["ratio"] = statistics.median(r["aasn"] / r["vanilla"] for r in rounds)
                # best-of (least disturbed) figures: minimum times
                best = {key: min(r[key] for r in rounds) for key in rounds[0]}
                row["best"] = {
                    "vanilla_s": best["vanilla"],
                    "aasn_s": best["aasn"],
                    "ratio": best["aasn"] / best["vanilla"],
                    "matmul_gflops": matmul_flops / best["matmul"] / 1e9,
                    **{
                        f"{name}_matmul_fraction": (flops[name] * batch / best[name]) / (matmul_flops / best["matmul"])
                        for name in nets
                    },
                }
                rows.append(row)
                print(
                    f"{fmt:14s} {batch:5d} {row['matmul_gflops']:14.1f} {row['vanilla_s']:10.3f} {row['aasn_s']:10.3f} "
                    f"{row['ratio']:6.2f} {100 * row['vanilla_matmul_fraction']:10.1f}% "
                    f"{100 * row['aasn_matmul_fraction']:8.1f}%",
                    flush=True,
                )
                b = row["best"]
                print(
                    f"{'  best-of':14s} {batch:5d} {b['matmul_gflops']:14.1f} {b['vanilla_s']:10.3f} {b['aasn_s']:10.3f} "
                    f"{b['ratio']:6.2f} {100 * b['vanilla_matmul_fraction']:10.1f}% {100 * b['aasn_matmul_fraction']:8.1f}%",
                    flush=True,
                )
        results["rows"] = rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
