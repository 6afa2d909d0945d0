"""Network throughput: forward slices/s by batch size, precision, memory format and torch.compile; training
images/s; FLOPs per slice (counted with torch's FlopCounterMode) and achieved FLOP/s.

Every variant is measured in the same run as its baseline (fp32, contiguous, eager, batch 1) and reported as a
ratio. On a CPU the paper configuration is measured at small batches only (one 256x256 slice is ~170 GFLOP).
Run: ``.venv/bin/python -m bench.throughput [--quick]``.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from bench.common import save, table

# Dense fp32 peak of an H100 SXM (TF32 tensor cores ~ 495 TFLOP/s) and fp16/bf16 (~990): for the roofline line.
GPU_PEAK_TFLOPS = {"fp32": 67.0, "tf32": 495.0, "fp16": 990.0, "bf16": 990.0}


def flops_per_slice(model: torch.nn.Module, size: int, heads: tuple[str, ...]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, size, size), heads=heads)
    return counter.get_total_flops()


def forward_rate(model, size: int, batch: int, device: torch.device, dtype: torch.dtype | None,
                 channels_last: bool, seconds: float) -> float:
    x = torch.rand(batch, 1, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    heads = ("seg", "cls")

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            model(x, heads=heads)

    with torch.inference_mode():
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n < 2:
            step()
            n += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        return n * batch / (time.perf_counter() - start)


def train_rate(config_name: str, device: torch.device, batch: int, steps: int) -> float:
    from covid_mtl.nets.config import get_config
    from covid_mtl.train.losses import MultiTaskLoss
    from covid_mtl.nets.factory import build_model
    from covid_mtl.train.step import train_step

    config = get_config(config_name)
    model = build_model(config).to(device)
    loss_fn = MultiTaskLoss(model.tasks)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    size = config.image_size
    batch_data = {"image": torch.rand(batch, 1, size, size, device=device),
                  "mask": (torch.rand(batch, 1, size, size, device=device) > 0.9).float(),
                  "has_mask": torch.ones(batch, device=device), "cls_target": torch.zeros(batch, 3, device=device),
                  "cls_weight": torch.ones(batch, 3, device=device)}
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if amp else None
    train_step(model, loss_fn, optimizer, batch_data, scaler=scaler, amp=amp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, loss_fn, optimizer, batch_data, scaler=scaler, amp=amp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def forward_rows(config_name: str, device: torch.device, batches: list[int], seconds: float,
                 try_compile: bool) -> list[dict[str, Any]]:
    from covid_mtl.nets.config import get_config
    from covid_mtl.nets.factory import build_model

    config = get_config(config_name)
    model = build_model(config).eval().to(device)
    size = config.image_size
    flops = flops_per_slice(build_model(config).eval(), size, ("seg", "cls"))
    precisions: list[tuple[str, torch.dtype | None]] = [("fp32", None)]
    if device.type == "cuda":
        precisions += [("bf16", torch.bfloat16), ("fp16", torch.float16)]
    rows = []
    baseline = None
    for batch in batches:
        for precision, dtype in precisions:
            for channels_last in (False, True):
                net = model.to(memory_format=torch.channels_last) if channels_last else model.to(
                    memory_format=torch.contiguous_format)
                rate = forward_rate(net, size, batch, device, dtype, channels_last, seconds)
                baseline = baseline or rate
                rows.append({"config": config_name, "device": device.type, "batch": batch, "precision": precision,
                             "channels_last": channels_last, "compile": False, "slices_per_s": rate,
                             "vs_baseline": rate / baseline, "gflop_per_slice": flops / 1e9,
                             "achieved_tflops": rate * flops / 1e12,
                             "of_peak": (rate * flops / 1e12) / GPU_PEAK_TFLOPS[precision] if device.type == "cuda" else None})
    if try_compile:
        batch = batches[-1]
        try:
            compiled = torch.compile(model)
            rate = forward_rate(compiled, size, batch, device, torch.bfloat16 if device.type == "cuda" else None,
                                False, seconds)
            rows.append({"config": config_name, "device": device.type, "batch": batch,
                         "precision": "bf16" if device.type == "cuda" else "fp32", "channels_last": False,
                         "compile": True, "slices_per_s": rate, "vs_baseline": rate / baseline,
                         "gflop_per_slice": flops / 1e9, "achieved_tflops": rate * flops / 1e12, "of_peak": None})
        except Exception as exc:  # torch.compile needs a compiler toolchain; report rather than fail
            rows.append({"config": config_name, "device": device.type, "batch": batch, "compile": f"failed: {exc}"[:80]})
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes, shorter timing windows")
    args = parser.parse_args(argv)
    seconds = 1.0 if args.quick else 3.0
    cpu = torch.device("cpu")
    rows = forward_rows("lite", cpu, [1, 8] if args.quick else [1, 4, 16, 32], seconds, try_compile=not args.quick)
    rows += forward_rows("paper", cpu, [1], seconds, try_compile=False)
    train = [{"config": c, "device": "cpu", "batch": 4, "images_per_s": train_rate(c, cpu, 4, 2 if c == "lite" else 1)}
             for c in ("lite", "paper")]
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        rows += forward_rows("paper", gpu, [1, 8, 16, 32, 64], seconds, try_compile=True)
        rows += forward_rows("lite", gpu, [1, 64], seconds, try_compile=False)
        train += [{"config": c, "device": "cuda", "batch": 4, "images_per_s": train_rate(c, gpu, 4, 20)}
                  for c in ("lite", "paper")]
    print(table("throughput: forward (seg + cls heads), slices/s", rows))
    print(table("training: images/s (recon + seg + cls, Adam)", train))
    payload = {"forward": rows, "training": train, "torch_threads": torch.get_num_threads(),
               "cuda": torch.cuda.is_available()}
    print(f"saved {save('throughput', payload)}")
    return payload


if __name__ == "__main__":
    main()
