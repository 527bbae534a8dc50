"""The gan commands: train, sample, score."""

from __future__ import annotations

import json

from pasture.cli.options import (
    HelpFormatter,
    accuracy_line,
    add_data_options,
    add_device_flag,
    add_run_folder_flags,
    add_settings_flags,
    data_options,
    positive_float,
    positive_int,
    settings_overrides,
)
from pasture.core.errors import UserError
from pasture.gan.presets import GAN_PRESETS, GanPreset

GAN_EXAMPLES = """examples:
  pasture gan train photos/ --out gans/paper --preset paper      # the report's DCGAN, one per class
  pasture gan train photos/ --out gans/cond                      # conditional + DiffAugment + EMA
  pasture gan sample gans/cond --per-class 500 --out synth/cond
  pasture gan sample gans/cond --per-class 200 --out synth/kept --filter-run runs/default --min-confidence 0.8
  pasture gan score gans/cond photos/ --json                     # KID, GAN-test, GAN-train, memorisation
  pasture train photos/ --out runs/with-gan --synthetic synth/cond --synthetic-ratio 0.3
"""


def _add_gan_commands(commands) -> None:
    gan = commands.add_parser(
        "gan",
        help="train GANs, sample synthetic images, score them",
        epilog=GAN_EXAMPLES,
        formatter_class=HelpFormatter,
        description="GANs that make training images, trained on the training split only.",
    )
    gan.set_defaults(command_handler=_run_gan)  # the command's handler, beside its parser
    gan_commands = gan.add_subparsers(dest="gan_command", metavar="GAN_COMMAND")
    train = gan_commands.add_parser(
        "train",
        usage="pasture gan train DATA --out GAN_DIR [--preset PRESET] [preset fields] [options]",
        help="train a GAN on DATA's training split",
        epilog=GAN_EXAMPLES,
        formatter_class=HelpFormatter,
        description="Writes GAN_DIR/config.json, checkpoint.pt, gan_log.jsonl, gan_losses.png, samples_*.png.",
    )
    train.add_argument("data", metavar="DATA", help="class folders, or a train/test layout (its train split)")
    train.add_argument("--out", required=True, metavar="GAN_DIR", help="GAN folder to write")
    train.add_argument(
        "--preset",
        default="default",
        choices=sorted(GAN_PRESETS),
        metavar="PRESET",
        help="named GAN preset: " + "; ".join(f"{name}: {preset.description}" for name, preset in GAN_PRESETS.items()),
    )
    add_settings_flags(train, GanPreset, "preset")
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation, sampling and augmentation")
    add_data_options(train)
    add_device_flag(train)
    add_run_folder_flags(train, "GAN_DIR")

    sample = gan_commands.add_parser(
        "sample",
        help="write synthetic images in the class-folder layout",
        epilog=GAN_EXAMPLES,
        formatter_class=HelpFormatter,
        description="Writes SYNTH_DIR/<class>/*.png and SYNTH_DIR/synth.json.",
    )
    sample.add_argument("gan_dir", metavar="GAN_DIR", help="a GAN folder (pasture gan train --out)")
    sample.add_argument("--per-class", type=positive_int, default=500, help="images per class")
    sample.add_argument("--out", required=True, metavar="SYNTH_DIR", help="folder for SYNTH_DIR/<class>/*.png")
    sample.add_argument("--seed", type=int, default=0, help="seed of the latent draws")
    sample.add_argument("--truncation", type=positive_float, help="resample latent values beyond this magnitude")
    sample.add_argument("--filter-run", metavar="RUN", help="keep samples this classifier assigns to their class")
    sample.add_argument("--min-confidence", type=float, default=0.5, help="with --filter-run")
    sample.add_argument("--force", action="store_true", help="replace an existing synthetic set")
    add_device_flag(sample)

    score = gan_commands.add_parser(
        "score",
        help="GAN-test, GAN-train and memorisation",
        epilog=GAN_EXAMPLES,
        formatter_class=HelpFormatter,
        description="How useful are the samples? Writes SOURCE/score.json.",
    )
    score.add_argument("source", metavar="GAN_DIR|SYNTH_DIR", help="a GAN folder, or sampled images")
    score.add_argument("data", metavar="DATA", help="the real data (train/test layout or class folders)")
    score.add_argument("--run", metavar="RUN", help="classifier trained on real images, for GAN-test")
    score.add_argument("--per-class", type=positive_int, help="samples per class when SOURCE is a GAN")
    score.add_argument("--seed", type=int, default=0, help="seed of the samples and of the scoring runs")
    score.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_device_flag(score)


def _run_gan(args) -> int:
    from pasture import api

    if args.gan_command == "train":
        summary = api.gan_train(
            args.data,
            args.out,
            preset=args.preset,
            overrides=settings_overrides(args, GanPreset),
            data_options=data_options(args),
            seed=args.seed,
            resume=args.resume,
            force=args.force,
            quiet=args.quiet,
            device=args.device,
            command=args.command_line,
        )
        print(f"GAN written to {args.out} ({summary['units']} unit(s), {summary['seconds']:.0f} s)")
        for unit, final in summary["final"].items():
            print(
                f"  unit {unit}: D loss {final['loss_d']:.3f}, G loss {final['loss_g']:.3f}, "
                f"D(x) {final['d_real']:.2f}, D(G(z)) {final['d_fake']:.2f}"
            )
        return 0
    if args.gan_command == "sample":
        info = api.gan_sample(
            args.gan_dir,
            args.out,
            per_class=args.per_class,
            seed=args.seed,
            truncation=args.truncation,
            filter_run=args.filter_run,
            min_confidence=args.min_confidence,
            force=args.force,
            device=args.device,
        )
        counts = ", ".join(f"{name}: {count}" for name, count in info["counts"].items())
        print(f"synthetic set written to {args.out} ({counts})")
        return 0
    if args.gan_command == "score":
        score = api.gan_score(
            args.source, args.data, run=args.run, per_class=args.per_class, seed=args.seed, device=args.device
        )
        if args.json:
            print(json.dumps(score))
            return 0
        for key, label in (
            ("gan_test", "GAN-test (real-trained classifier on samples)"),
            ("gan_train", "GAN-train (sample-trained classifier on real test)"),
            ("real_train_reference", "reference (real-trained classifier on real test)"),
        ):
            row = score[key]
            print(accuracy_line(f"{label}: ", row["accuracy"], row["ci95"], row["n"]))
        per_class = ", ".join(f"{name} {accuracy:.0%}" for name, accuracy in score["gan_test_per_class"].items())
        print(f"GAN-test per class: {per_class}")
        detail = score["kid_detail"]
        if score["kid"] is None:
            print(
                f"KID: needs at least 3 real test photos and 3 samples (n={detail['n_real']} and {detail['n_synthetic']})"
            )
        else:
            print(
                f"KID vs real test photos: {score['kid'] * 1000:.1f} x 10^-3 (SE {score['kid_se'] * 1000:.1f}; "
                f"n={detail['n_synthetic']} samples, {detail['n_real']} photos; {detail['features']}; lower is closer)"
            )
        memo = score["memorisation"]
        print(
            f"near-copies of training images: {memo['near_copy_fraction']:.1%} "
            f"(95% CI {memo['near_copy_ci95'][0]:.1%}-{memo['near_copy_ci95'][1]:.1%}, n={memo['n']})"
        )
        return 0
    raise UserError("gan: give a command: train, sample or score (see pasture gan --help)")


def add_commands(commands) -> None:
    """gan train, gan sample, gan score."""
    _add_gan_commands(commands)
