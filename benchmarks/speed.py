"""Speed on a laptop CPU: every figure measured side by side in one run. Prints a table, writes JSON.

1. classifier training throughput, pasture vs a plain notebook loop (ImageFolder + DataLoader +
   per-image PIL transforms) with the same model, augmentation, optimiser and batch size;
2. GAN D+G step throughput (DCGAN 64x64, ngf=ndf=64, batch 64), pasture (fp32, channels_last, bf16)
   vs a plain fp32 DCGAN-tutorial loop with a DataLoader, same networks;
3. achieved GFLOP/s of those steps against a measured 2048x2048 matmul ceiling (fp32 and bf16);
4. predict latency for one image, model loaded once: paper-cnn and effnet-lite0, p50 and p95;
5. wall time of `pasture experiment paper DATA --seeds 10` (read from --experiment-results);
6. cold start of `pasture --help`, and that it does not import torch;
plus peak RSS of a training run and a GAN run, and of training on 1,000 images at 128 px.

  python benchmarks/speed.py [--data ../shared/data/cowhorse-dev] [--experiment-results DIR/results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

DEVICE = torch.device("cpu")  # --device: where pasture's rows and the plain loops run


def sync() -> None:
    """Wait for the device's queued work, so that the clock measures it (a no-op on the CPU)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def matmul_ceiling(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size).to(DEVICE, dtype), torch.randn(size, size).to(DEVICE, dtype)
    for _ in range(2):
        a @ b
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def count_flops(step) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


# -- 1. classifier ---------------------------------------------------------------------------------


def classifier_pasture(data: Path, epochs: int, precision: str = "fp32") -> dict:
    from pasture.classify.fit import train_classifier
    from pasture.classify.recipes import get_recipe, with_overrides
    from pasture.data import load_dataset

    started = time.perf_counter()
    dataset = load_dataset(data, 64, warn=lambda message: None)
    decode = time.perf_counter() - started
    recipe = with_overrides(get_recipe("default"), epochs=epochs, augment="paper", precision=precision)
    dataset_no_test = type(dataset)(**{**dataset.__dict__, "test": None})  # time training alone
    train_classifier(dataset_no_test, with_overrides(recipe, epochs=1), seed=0, device=DEVICE)  # warm-up: kernels
    sync()
    started = time.perf_counter()
    train_classifier(dataset_no_test, recipe, seed=0, device=DEVICE)
    sync()
    seconds = time.perf_counter() - started
    n = len(dataset.train)
    return {
        "precision": precision,
        "decode_seconds": decode,
        "seconds_per_epoch": seconds / epochs,
        "images_per_second": n * epochs / seconds,
        "total_seconds": decode + seconds,
    }


def notebook_paper_cnn(image_size: int) -> torch.nn.Module:
    """The report's CNN as a notebook writes it: stock layers (nn.Dropout), default NCHW layout.
    Same layers, sizes and initialisation as pasture's paper-cnn; normalisation is in the transform."""
    from torch import nn

    from pasture.models.paper_cnn import paper_cnn_flatten_size

    return nn.Sequential(
        nn.Conv2d(3, 16, 3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 2),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 8, 2),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(paper_cnn_flatten_size(image_size), 800),
        nn.ReLU(inplace=True),
        nn.Dropout(0.15),
        nn.Linear(800, 200),
        nn.Dropout(0.5),
        nn.Linear(200, 2),
    )


def classifier_plain(data: Path, epochs: int, workers: int) -> dict:
    """What a typical notebook does: decode and transform every image, every epoch, in PIL."""
    import torch.nn.functional as F
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Resize(64),
            transforms.CenterCrop(64),
            transforms.RandomHorizontalFlip(),
            transforms.RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            transforms.ColorJitter(0.2, 0.2, 0.2, 0.05),
            transforms.ToTensor(),
            transforms.Normalize((0.5,) * 3, (0.5,) * 3),
        ]
    )
    folder = datasets.ImageFolder(str(data / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(
        folder, batch_size=16, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    torch.manual_seed(0)
    model = notebook_paper_cnn(64).to(DEVICE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)

    def epoch():
        model.train()
        for images, labels in loader:
            images, labels = images.to(DEVICE), labels.to(DEVICE)
            loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    epoch()  # warm-up, as for pasture: kernels built, workers started
    sync()
    started = time.perf_counter()
    for _ in range(epochs):
        epoch()
    sync()
    seconds = time.perf_counter() - started
    return {
        "workers": workers,
        "seconds_per_epoch": seconds / epochs,
        "images_per_second": len(folder) * epochs / seconds,
    }


# -- 2/3. GAN --------------------------------------------------------------------------------------


def gan_plain(data: Path, steps: int) -> dict:
    """The DCGAN tutorial's loop: DataLoader of transformed files, BCE, fp32, same G and D."""
    import torch.nn.functional as F
    from torchvision import datasets, transforms

    from pasture.gan.nets import Discriminator, Generator

    transform = transforms.Compose(
        [
            transforms.Resize(64),
            transforms.CenterCrop(64),
            transforms.ToTensor(),
            transforms.Normalize((0.5,) * 3, (0.5,) * 3),
        ]
    )
    folder = datasets.ImageFolder(str(data / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(folder, batch_size=64, shuffle=True, drop_last=True, num_workers=0)
    torch.manual_seed(0)
    generator, discriminator = Generator(100, 64, 64).to(DEVICE), Discriminator(64, 64).to(DEVICE)
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def step(real):
        real = real.to(DEVICE)
        ones, zeros = torch.ones(real.shape[0], device=DEVICE), torch.zeros(real.shape[0], device=DEVICE)
        z = torch.randn(real.shape[0], 100, device=DEVICE)
        fake = generator(z)
        loss_d = F.binary_cross_entropy_with_logits(discriminator(real), ones) + F.binary_cross_entropy_with_logits(
            discriminator(fake.detach()), zeros
        )
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = F.binary_cross_entropy_with_logits(discriminator(fake), ones)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    done, started = 0, None
    while done < steps + 1:
        for real, _ in loader:
            if done == 1:
                sync()
                started = time.perf_counter()  # the first step warms up
            step(real)
            done += 1
            if done >= steps + 1:
                break
    sync()
    seconds = (time.perf_counter() - started) / steps
    flops = count_flops(lambda: step(next(iter(loader))[0]))
    return {"seconds_per_step": seconds, "images_per_second": 64 / seconds, "gflops_per_second": flops / seconds / 1e9}


def gan_pasture(data: Path, steps: int, precision: str, channels_last: bool) -> dict:
    """Marginal cost of a step: time(2 + steps iterations) - time(2 iterations), so that building the
    networks and the final sample grid (fixed costs of a run) are not charged to the steps."""
    from dataclasses import replace

    from pasture.data import load_dataset
    from pasture.gan.presets import GanPreset
    from pasture.gan.trainer import train_gan

    train = load_dataset(data, 64, warn=lambda message: None).train
    # One class, so that one unconditional GAN sees all images in batches of 64, as the plain loop does
    # (an unconditional preset otherwise trains one GAN per class, on half the images each).
    train = replace(train, labels=torch.zeros_like(train.labels), classes=["all"])

    def preset(iterations: int) -> GanPreset:
        return GanPreset(
            "speed",
            image_size=64,
            nz=100,
            ngf=64,
            ndf=64,
            iterations=iterations,
            batch_size=64,
            sample_every=10**9,
            precision=precision,
            channels_last=channels_last,
        )

    def timed(iterations: int) -> float:
        sync()
        started = time.perf_counter()
        train_gan(train, preset(iterations), 0, device=DEVICE)
        sync()
        return time.perf_counter() - started

    timed(1)  # warm-up: oneDNN builds its kernels for these shapes once
    seconds = (timed(2 + steps) - timed(2)) / steps
    flops = count_flops(lambda: train_gan(train, preset(3), 0, device=DEVICE)) - count_flops(
        lambda: train_gan(train, preset(2), 0, device=DEVICE)
    )
    return {
        "precision": precision,
        "channels_last": channels_last,
        "seconds_per_step": seconds,
        "images_per_second": 64 / seconds,
        "gflops_per_second": flops / seconds / 1e9,
    }


# -- 4. predict latency ----------------------------------------------------------------------------


def predict_latency(run: Path, image: Path, repeats: int = 40) -> dict:
    from pasture.api import load_run
    from pasture.classify.evaluate import predict_probabilities
    from pasture.data import decode_files

    model, config = load_run(run, DEVICE)
    times = []
    for index in range(repeats + 3):
        started = time.perf_counter()
        predict_probabilities(model, decode_files([image], config["image_size"]), tta=config["recipe"]["tta"])
        if index >= 3:
            times.append(time.perf_counter() - started)
    times.sort()
    return {
        "model": config["model"],
        "tta": config["recipe"]["tta"],
        "p50_ms": 1000 * statistics.median(times),
        "p95_ms": 1000 * times[int(0.95 * len(times)) - 1],
    }


# -- 6 and memory: child processes -----------------------------------------------------------------


def child_peak_rss(code: str) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of `python -c code`.

    Read from the child's own /proc/self/status VmHWM: getrusage's ru_maxrss of a forked child starts
    from the parent's peak, which would report this benchmark's own memory instead."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code + "\nprint(next(line for line in open('/proc/self/status') if line.startswith('VmHWM')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - started
    rss_kib = int(next(line for line in done.stdout.splitlines() if line.startswith("VmHWM")).split()[1])
    return rss_kib / 1024, seconds


def cold_start() -> dict:
    times = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run(["pasture", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nfrom pasture.cli import build_parser\n"
            "build_parser().format_help()\nprint('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return {"median_seconds": statistics.median(times), "imports_torch": check.stdout.strip() == "True"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--epochs", type=int, default=30)  # pasture's; the plain loop runs a third
    parser.add_argument("--gan-steps", type=int, default=6)
    parser.add_argument("--experiment-results", help="results.json of `pasture experiment paper DATA --seeds 10`")
    parser.add_argument("--out", default=str(RESULTS / "speed.json"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps: where every row runs")
    args = parser.parse_args()
    data = data_or_exit(args.data)
    from pasture.core.device import device_info, resolve_device

    global DEVICE
    DEVICE = resolve_device(args.device)
    from pasture.core.device import cpu_flags, cpu_has_native_bf16, cpu_model

    flags = sorted(cpu_flags() & {"avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "bf16", "asimd"})
    # On a CPU without native bf16, PyTorch emulates it 10-100x slower than fp32: a 512^3 matmul took
    # 0.19 s against 0.02 s, and this script once never got past its bf16 ceiling. Those rows are skipped.
    bf16 = cpu_has_native_bf16() if DEVICE.type == "cpu" else DEVICE.type != "cuda" or torch.cuda.is_bf16_supported()
    report: dict = {
        "threads": torch.get_num_threads(),
        "cpu": os.cpu_count(),
        "cpu_model": cpu_model(),
        "cpu_flags": flags,
        "native_bf16": bf16,
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": device_info(DEVICE),
    }
    print(
        f"CPU: {cpu_model()} ({os.cpu_count()} cores; {' '.join(flags)}; torch kernels "
        f"{report['aten_cpu_capability']})",
        flush=True,
    )
    report["matmul_gflops"] = {
        "fp32": matmul_ceiling(torch.float32),
        "bf16": matmul_ceiling(torch.bfloat16) if bf16 else None,
    }
    print(
        f"matmul 2048^3 ceiling: fp32 {report['matmul_gflops']['fp32']:.0f} GFLOP/s, "
        + (
            f"bf16 {report['matmul_gflops']['bf16']:.0f} GFLOP/s"
            if bf16
            else "bf16 skipped: this CPU has no native bf16 (no AVX-512 BF16 or AMX)"
        ),
        flush=True,
    )

    # The plain baselines run first: pasture's training sets glibc's malloc thresholds for the whole
    # process (pasture.core.runtime), and a notebook's loop runs with glibc's defaults.
    from pasture.core.runtime import malloc_tuning_applied

    plain_cls = [classifier_plain(data, max(2, args.epochs // 3), workers) for workers in (0, 2)]
    plain_gan = gan_plain(data, args.gan_steps)
    if malloc_tuning_applied():
        raise RuntimeError("the plain baselines ran with pasture's malloc tuning; they must run first")
    pasture_cls = classifier_pasture(data, args.epochs)
    # bf16 is opt-in (it changes float rounding), and measured only where the CPU has it.
    pasture_bf16 = classifier_pasture(data, args.epochs, precision="bf16") if bf16 else None
    report["malloc_tuning"] = malloc_tuning_applied()
    best_plain = min(plain_cls, key=lambda row: row["seconds_per_epoch"])
    report["classifier"] = {
        "pasture": pasture_cls,
        "pasture_bf16": pasture_bf16,
        "plain": plain_cls,
        "speedup_per_epoch": best_plain["seconds_per_epoch"] / pasture_cls["seconds_per_epoch"],
        "speedup_per_epoch_bf16": best_plain["seconds_per_epoch"] / pasture_bf16["seconds_per_epoch"] if bf16 else None,
    }
    print(
        f"1. classifier (paper-cnn 64px, paper augmentation, batch 16): pasture {pasture_cls['images_per_second']:.0f} "
        f"img/s ({pasture_cls['seconds_per_epoch']:.3f} s/epoch, decode once {pasture_cls['decode_seconds']:.2f} s), "
        + (f"with --precision bf16 {pasture_bf16['images_per_second']:.0f} img/s; " if bf16 else "bf16 skipped; ")
        + f"plain best {best_plain['images_per_second']:.0f} img/s (workers={best_plain['workers']}); "
        f"speed-up {report['classifier']['speedup_per_epoch']:.1f}x"
        + (f" (bf16 {report['classifier']['speedup_per_epoch_bf16']:.1f}x)" if bf16 else ""),
        flush=True,
    )

    variants = [
        gan_pasture(data, args.gan_steps, precision, layout)
        for precision, layout in (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))
        if precision == "fp32" or bf16
    ]
    best = min(variants, key=lambda row: row["seconds_per_step"])
    report["gan"] = {
        "plain": plain_gan,
        "pasture": variants,
        "best": best,
        "speedup": plain_gan["seconds_per_step"] / best["seconds_per_step"],
    }
    print(
        f"2. GAN D+G step (64px, ngf=ndf=64, batch 64): plain fp32 {plain_gan['images_per_second']:.0f} img/s; "
        + "; ".join(
            f"pasture {v['precision']}{' channels_last' if v['channels_last'] else ''} "
            f"{v['images_per_second']:.0f} img/s"
            for v in variants
        )
        + f"; best speed-up {report['gan']['speedup']:.2f}x",
        flush=True,
    )
    print(
        f"3. achieved GFLOP/s: plain GAN {plain_gan['gflops_per_second']:.0f}; "
        + "; ".join(
            f"{v['precision']}{'/cl' if v['channels_last'] else ''} {v['gflops_per_second']:.0f}" for v in variants
        ),
        flush=True,
    )

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        os.environ["PASTURE_CACHE_DIR"] = str(scratch / "cache")
        from pasture import api

        api.train(data, scratch / "cnn", recipe="scratch", epochs=1, quiet=True, device=str(DEVICE))
        latencies = [predict_latency(scratch / "cnn", next((data / "test" / "cow").iterdir()))]
        # The pretrained backbones are in the base install since issue 25: no try/except here any more
        # (it hid that a probe refuses --epochs, so this row silently went missing).
        api.train(data, scratch / "effnet", model="effnet-lite0", quiet=True, device=str(DEVICE))
        latencies.append(predict_latency(scratch / "effnet", next((data / "test" / "cow").iterdir())))
        api.train(data, scratch / "default", quiet=True, device=str(DEVICE))  # the default: Lite0 + Lite2
        latencies.append(predict_latency(scratch / "default", next((data / "test" / "cow").iterdir())))
        report["predict_latency"] = latencies
        print(
            "4. predict one image (decode + forward, model loaded once): "
            + "; ".join(
                f"{row['model']}{' +TTA' if row['tta'] else ''} p50 {row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms"
                for row in latencies
            ),
            flush=True,
        )

        memory = {"import_torch_mib": child_peak_rss("import torch")[0]}
        memory["train_default_mib"], _ = child_peak_rss(
            f"from pasture import api\napi.train({str(data)!r}, {str(scratch / 'm1')!r}, recipe='default', quiet=True)"
        )
        memory["gan_default_mib"], _ = child_peak_rss(
            f"from pasture import api\napi.gan_train({str(data)!r}, {str(scratch / 'm2')!r}, iterations=50, quiet=True)"
        )
        big = scratch / "big"
        from pasture.study.demo import write_demo_data

        write_demo_data(big, per_class=250, size=128, seed=1)  # 2 splits x 2 classes x 250 = 1,000 images
        memory["train_1000_images_128px_mib"], memory["train_1000_images_128px_seconds"] = child_peak_rss(
            f"from pasture import api\napi.train({str(big)!r}, {str(scratch / 'm3')!r}, recipe='small-data', "
            "image_size=128, epochs=1, quiet=True)"
        )
        report["peak_rss"] = memory
        print(
            f"   peak RSS: import torch alone {memory['import_torch_mib']:.0f} MiB, training {memory['train_default_mib']:.0f} MiB, GAN {memory['gan_default_mib']:.0f} MiB, "
            f"1,000 images at 128 px {memory['train_1000_images_128px_mib']:.0f} MiB",
            flush=True,
        )

    if args.experiment_results and Path(args.experiment_results).is_file():
        results = json.loads(Path(args.experiment_results).read_text())
        report["experiment_paper_seconds"] = results["seconds"]
        print(
            f"5. pasture experiment paper, {results['replicates']} seeds: {results['seconds'] / 60:.1f} min "
            f"({results['runs_computed']} runs computed)",
            flush=True,
        )
    report["cold_start"] = cold_start()
    print(
        f"6. pasture --help: {report['cold_start']['median_seconds']:.2f} s, imports torch: "
        f"{report['cold_start']['imports_torch']}",
        flush=True,
    )
    write_results(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
