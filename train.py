"""Train the SVD-WCT image translation network (a thin CLI over models.trainer).

Artworks (CycleGAN layout ``<pair>/{trainA,trainB,testA,testB}``, A = paintings, B = photos)::

    python train.py --config configs/monet2photo.yaml

A new style domain (one folder of paintings, one of photos; configs/default.yaml)::

    python train.py --style-dir PAINTINGS --photo-dir PHOTOS --name NAME

Common flags: ``--out DIR --max-steps N --image-size PX --width W --batch-size B --device auto|cpu|cuda
--seed S --resume`` (``--resume-from CHECKPOINT``), ``--init-from CHECKPOINT`` (fine-tune: a new run starting
from another run's networks), plus any config key as ``key=value`` (e.g. ``optim.lr=2e-4``). Outputs go to
``DIR/NAME/``. Several GPUs / nodes: ``torchrun --nproc_per_node 4 train.py --config ...``.

Exit codes: 0 completed, 1 interrupted (Ctrl-C / SIGTERM: the step finishes and a checkpoint is saved),
2 bad arguments or config, 3 diverged (``train.max_nonfinite`` non-finite steps in a row; rolled back to the
last checkpoint), 130 a second Ctrl-C (stops at once, nothing saved).

Export the photo -> painting generator with a style bank (for the app and ``stylize.py``)::

    python train.py export --run runs/monet2photo --out checkpoints/monet.safetensors --fp16
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path

EXIT_DIVERGED = 3


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py", description=__doc__.split("\n\n")[0],
        epilog="Subcommand: `train.py export --help` writes a shipped generator checkpoint.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML experiment config (configs/*.yaml); default configs/default.yaml")
    p.add_argument("--style-dir", help="folder of paintings (domain A) for a new style domain")
    p.add_argument("--photo-dir", help="folder of photos (domain B) for a new style domain")
    p.add_argument("--name", help="run name (default: the config's name, or the style folder's name)")
    p.add_argument("--out", help="output root; the run goes to OUT/NAME/ (default: runs)")
    p.add_argument("--max-steps", type=int, help="total iterations (train.max_steps)")
    p.add_argument("--image-size", type=int,
                   help="training crop in px (data.crop_size; data.load_size keeps its ratio to it)")
    p.add_argument("--width", type=int, help="base channels of generators and discriminators (gen.width, dis.width)")
    p.add_argument("--batch-size", type=int, help="images per domain per process (train.batch_size)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, help="seed of init, data order and RNGs")
    p.add_argument("--resume", action="store_true",
                   help="continue the run OUT/NAME from its newest complete checkpoint (starts at step 0 when "
                        "it has none); the run's saved config is used unless --config is given")
    p.add_argument("--resume-from", metavar="CHECKPOINT",
                   help="continue from this training checkpoint (step_N.safetensors) instead")
    p.add_argument("--init-from", metavar="CHECKPOINT",
                   help="start a NEW run from the networks of this training checkpoint (fine-tuning, e.g. "
                        "Van Gogh from a Monet run; optimisers and step start fresh); train.init_from")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=2e-4")
    return p


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py export",
        description="Assemble one Generator (content encoder of the content domain + style encoder and decoder "
                    "of the style domain) with a style bank, as X.safetensors + X.json.")
    p.add_argument("--run", required=True, help="run folder OUT/NAME (newest checkpoint) or a training checkpoint")
    p.add_argument("--direction", default="b2a", choices=("b2a", "a2b"),
                   help="b2a = photo -> painting (default, what the app uses), a2b = painting -> photo")
    p.add_argument("--out", required=True, help="output .safetensors path (the .json goes beside it)")
    p.add_argument("--fp16", action="store_true", help="store weights and style bank in float16")
    p.add_argument("--bank-size", type=int, help="style images in the bank (default train.style_bank_size)")
    p.add_argument("--bank-prefix", help="display-name prefix of the bank styles (default: from --out, e.g. Monet)")
    return p


def build_config(args: argparse.Namespace, base: dict | None = None) -> dict:
    """Config from ``base`` (default: --config or configs/default.yaml), --style-dir/--photo-dir, the
    common flags and key=value overrides (not yet resolved)."""
    from models.trainer import apply_overrides, load_config

    if args.config and (args.style_dir or args.photo_dir):
        raise ValueError("give either --config or --style-dir/--photo-dir, not both")
    if bool(args.style_dir) != bool(args.photo_dir):
        raise ValueError("--style-dir and --photo-dir go together (a folder of paintings and one of photos)")
    cfg = base if base is not None else load_config(args.config)
    if args.style_dir:
        cfg["data"].update(root=None, train_a=args.style_dir, train_b=args.photo_dir, test_a=None, test_b=None)
        cfg["name"] = Path(args.style_dir).resolve().name
    apply_overrides(cfg, args.overrides)
    if args.name:
        cfg["name"] = args.name
    if args.out:
        cfg["out"] = args.out
    if args.max_steps is not None:
        cfg["train"]["max_steps"] = args.max_steps
    if args.image_size is not None:
        d = cfg["data"]
        d["load_size"] = max(args.image_size, round(args.image_size * d["load_size"] / d["crop_size"]))
        d["crop_size"] = args.image_size
    if args.width is not None:
        cfg["gen"]["width"] = cfg["dis"]["width"] = args.width
    if args.batch_size is not None:
        cfg["train"]["batch_size"] = args.batch_size
    if args.device:
        cfg["device"] = args.device
    if args.seed is not None:
        cfg["seed"] = args.seed
    if args.init_from:
        cfg["train"]["init_from"] = args.init_from
    return cfg


def resume_config(args: argparse.Namespace, cfg: dict) -> dict:
    """On --resume: without --config/--style-dir, the run's saved config.yaml plus this command line's
    flags; with them, the new config. Either way keys outside ``MUTABLE_ON_RESUME`` must not change."""
    import yaml

    from models.trainer import MUTABLE_ON_RESUME, config_diff, find_checkpoints, load_config, resolve_config

    run_cfg = Path(cfg["out"]).expanduser() / str(cfg["name"]) / "config.yaml"
    if not run_cfg.is_file():
        return cfg
    saved = load_config(run_cfg)  # the defaults + the saved keys: keys added since the run started compare equal
    if not (args.config or args.style_dir):
        cfg = build_config(args, base=yaml.safe_load(yaml.safe_dump(saved)))
    if find_checkpoints(run_cfg.parent / "checkpoints"):
        # a real resume never re-applies train.init_from (the checkpoints record where the run started), so
        # the file it names may be gone
        cfg["train"]["init_from"] = None
    fixed = {k: v for k, v in config_diff(saved, resolve_config(cfg)).items() if k not in MUTABLE_ON_RESUME}
    if fixed:
        lines = "\n".join(f"  {k}: saved {a!r}, now {b!r}" for k, (a, b) in fixed.items())
        raise ValueError(f"--resume cannot change these keys of run {run_cfg.parent}:\n{lines}\n"
                         "Start a new run (another --name) to change them.")
    return cfg


@contextlib.contextmanager
def one_line_warnings():
    """Print warnings raised inside the block as one ``warning: MESSAGE`` line on stderr (no file name,
    line number or source line; non-``UserWarning`` categories are named). Filters still apply, so
    nothing is hidden that Python would show."""
    old = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        kind = "" if category is UserWarning else f" [{category.__name__}]"
        text = " ".join(str(message).split())
        try:
            print(f"warning: {text}{kind}", file=file or sys.stderr, flush=True)
        except OSError:
            pass

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = old


def main(argv: list[str] | None = None) -> int:
    with one_line_warnings():
        return _main(argv)


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        a = _export_parser().parse_args(argv[1:])
        from models.trainer import export_generator

        export_generator(a.run, direction=a.direction, out=a.out, fp16=a.fp16, bank_size=a.bank_size,
                         bank_prefix=a.bank_prefix)
        return 0
    if argv[:1] == ["train"]:
        argv = argv[1:]
    args = _train_parser().parse_intermixed_args(argv)
    from models.checkpoint import CheckpointError
    from models.trainer import TrainingDiverged, fit, resolve_config

    try:
        cfg = build_config(args)
        if args.resume or args.resume_from:
            cfg = resume_config(args, cfg)
        cfg = resolve_config(cfg)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        summary = fit(cfg, resume=args.resume_from or args.resume)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    except (FileExistsError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0 if summary["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
