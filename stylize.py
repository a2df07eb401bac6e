"""Batch stylisation CLI: stylise files or folders of content images with one or more styles.

Examples::

    python stylize.py --content photos/ --style starry.jpg --output out/                  # colour or network
    python stylize.py --content a.jpg --model monet --output out/                         # Monet style bank
    python stylize.py --content a.jpg --style s1.jpg s2.jpg --style-weights 0.7 0.3 --output out/
    python stylize.py --content big.tif --style s.jpg --model monet --tile 1024 --output out/

Outputs are ``<output>/<content>_stylized_<style>.<ext>`` (sub-folders of a content folder are mirrored).
Names never clash silently: when two contents (or two styles) would give the same output name, e.g.
``chelsea.jpg`` and ``chelsea.png`` with ``--ext png``, their names keep the source extension
(``chelsea.jpg_stylized_<style>.png``, ``chelsea.png_stylized_<style>.png``); the same file name given twice
gets ``-2``, ``-3``, ...; a note lists the renamed files. An output folder inside a content folder is left
out of the content search (so a second run does not stylise the outputs of the first).
Every content image is stylised with every style (or once with the interpolation of all styles when
``--style-weights`` is given). Files that fail are listed at the end and the exit status is 1; a bad
command line or an unusable model exits with 2.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

SAVE_EXTS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff")

#: Without --tile, network engines stylise contents whose longer side exceeds this many px in tiles of
#: AUTO_TILE px (global statistics), so that a 4K photo never needs the whole-image feature maps.
AUTO_TILE_ABOVE = 2048
AUTO_TILE = 1024


#: wct.io.DEFAULT_MAX_PIXELS (not imported here so that ``--help`` does not import torch; a test checks it).
_DEFAULT_MAX_PIXELS = 8192 * 8192


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` only where the help text does not already state its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default is None or action.default is False or action.default == []:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The ``stylize.py`` argument parser (every option documented in its help text)."""
    p = argparse.ArgumentParser(
        prog="stylize.py",
        description="Stylise content images with the colour-transfer engine or an SVD-WCT network.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--content", nargs="+", required=True, metavar="FILE|DIR",
                   help="content image files and/or folders (searched recursively)")
    p.add_argument("--style", nargs="*", default=[], metavar="FILE|DIR",
                   help="style image files and/or folders; none = the network checkpoint's style bank")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--model", default="auto",
                   help="engine: 'color', a checkpoint name in checkpoints/ (e.g. 'monet'), a path to a "
                        ".safetensors checkpoint, or 'auto' (the shipped default 'vangogh' if present, else the "
                        "first checkpoint, else 'color')")
    p.add_argument("--checkpoint-dir", default=None, help="where checkpoint names are looked up "
                   "(default: the repository's checkpoints/)")
    p.add_argument("--alpha", type=float, default=None,
                   help="strength in [0, 1] (default: the network's learned blend; colour: 1)")
    p.add_argument("--preserve-color", action="store_true",
                   help="keep the content's colours (luminance-only transfer)")
    p.add_argument("--style-weights", type=float, nargs="+", default=None, metavar="W",
                   help="interpolate all styles with these weights (one per style) into one output")
    p.add_argument("--style-index", type=int, nargs="+", default=None, metavar="I",
                   help="style-bank entries to use when no --style is given (default: all of them)")
    p.add_argument("--content-size", type=int, default=0,
                   help="resize contents so that the shorter side is this many px (0 = keep original)")
    p.add_argument("--style-size", type=int, default=512,
                   help="resize styles so that the shorter side is this many px (0 = keep original)")
    p.add_argument("--crop", action="store_true",
                   help="centre-crop contents and styles to squares of --content-size / --style-size")
    p.add_argument("--max-size", type=int, default=0,
                   help="downscale contents whose longer side exceeds this (0 = no limit; see --tile)")
    p.add_argument("--max-pixels", type=int, default=_DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse images whose header declares more than N pixels (width x height) as possible "
                        "decompression bombs, before decoding (0 = no limit)")
    p.add_argument("--ext", default=None, choices=SAVE_EXTS,
                   help="output format (default: the content's own if in the list, else png)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0, help="random seed (torch, random)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads of torch (0 = torch's default; 1 is much faster on a busy machine)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="images of the same size are stylised together in batches of this size")
    p.add_argument("--mask", default=None, metavar="FILE",
                   help="stylise only where this mask is white (resized to each content, feathered)")
    p.add_argument("--mask-feather", type=float, default=None,
                   help="Gaussian feather radius of the mask in px (default: 1%% of the longer side)")
    p.add_argument("--tile", type=int, default=0,
                   help="high resolution: stylise in tiles of this many px (multiple of 4, >= 32) with "
                        f"global statistics (network engine; 0 = automatic: {AUTO_TILE} px tiles for "
                        f"contents longer than {AUTO_TILE_ABOVE} px, whole image otherwise)")
    p.add_argument("--tile-overlap", type=int, default=None,
                   help="overlap of neighbouring tiles in px, in [0, tile/2) (default: 64, or tile/4 for tiles "
                        "under 256 px)")
    p.add_argument("--tile-stats", default="thumbnail", choices=("thumbnail", "exact"),
                   help="statistics for tiles: from a 1024 px thumbnail, or exact full-resolution ones "
                        "(one extra pass over the tiles per normalisation layer)")
    p.add_argument("--skip-existing", action="store_true", help="do not redo outputs that already exist")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@dataclass
class _Content:
    path: Path
    rel: Path  # output sub-path (without suffix) relative to --output


def _expand(items: list[str], what: str, failures: list[tuple[str, str]],
            exclude: Path | None = None) -> list[tuple[Path, Path]]:
    """Files and folders -> [(file, relative stem path)]; missing entries become failures.

    Files found in a folder are skipped when they lie inside ``exclude`` (the output folder, so that an
    output folder inside a content folder is not stylised again on the next run); when ``exclude`` *is*
    the folder, earlier outputs (``*_stylized_*``) are skipped instead. Files named explicitly are kept.
    """
    from wct.io import list_images

    ex = exclude.resolve() if exclude is not None else None
    out: list[tuple[Path, Path]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files = list_images(p)
            root = p.resolve()
            if ex is not None and ex.is_relative_to(root):  # the output folder is (inside) this folder
                kept = [f for f in files
                        if not (f.resolve().is_relative_to(ex) and (ex != root or "_stylized_" in f.stem))]
                if len(kept) < len(files):
                    print(f"note: {len(files) - len(kept)} file(s) in '{p}' skipped: they are in the output "
                          f"folder '{exclude}' (earlier outputs)", file=sys.stderr)
                files = kept
            if not files:
                failures.append((str(p), f"no {what} images found in this folder"))
            out += [(f, f.relative_to(p).with_suffix("")) for f in files]
        elif p.is_file():
            out.append((p, Path(p.stem)))
        else:
            failures.append((str(p), f"{what}: no such file or folder"))
    return out


def _prepare_image(path: Path, size: int, crop: bool, max_size: int, min_side: int,
                   max_pixels: int | None = _DEFAULT_MAX_PIXELS) -> Image.Image:
    from wct.io import center_crop, load_image, resize_shorter_side

    img = load_image(path, max_side=max_size or None, max_pixels=max_pixels)
    if size:
        img = resize_shorter_side(img, size)
        if crop:
            img = center_crop(img, size)
    if min(img.size) < min_side:
        from wct.io import ImageLoadError

        raise ImageLoadError(f"'{path}': {img.width}x{img.height} px is smaller than the engine's minimum "
                             f"of {min_side} px on the shorter side (not upscaled; use --content-size)")
    return img


def _out_path(out_dir: Path, rel: Path, label: str, ext: str | None, src: Path) -> Path:
    e = ext or (src.suffix.lower().lstrip(".") if src.suffix.lower().lstrip(".") in SAVE_EXTS else "png")
    safe = "".join(ch if ch.isalnum() or ch in "-_+." else "-" for ch in label)
    return out_dir / rel.parent / f"{rel.name}_stylized_{safe}.{e}"


def _batches(loaded: Iterator[tuple[_Content, Image.Image | Exception]], batch_size: int):
    """Group loaded images by size; yield (items, images) lists of one size, or (item, exception)."""
    buckets: dict[tuple[int, int], list[tuple[_Content, Image.Image]]] = {}
    for item, img in loaded:
        if isinstance(img, Exception):
            yield [item], img
            continue
        b = buckets.setdefault(img.size, [])
        b.append((item, img))
        if len(b) >= batch_size:
            yield [i for i, _ in b], [im for _, im in b]
            buckets[img.size] = []
    for b in buckets.values():
        if b:
            yield [i for i, _ in b], [im for _, im in b]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring and ``--help``).

    Returns:
        Exit status: 0 when every output was written, 1 when some file failed (listed in the summary on
        stderr; the other outputs are kept), 2 on a usage error, 130 on Ctrl-C.
    """
    args = build_parser().parse_args(argv)
    import torch
    from tqdm import tqdm

    from models.inference import DEFAULT_MODEL, available_engines, load_engine
    from wct.io import ImageLoadError, load_image, save_image

    def fail_usage(msg: str) -> int:
        print(f"stylize.py: error: {msg}", file=sys.stderr)
        return 2

    if args.batch_size < 1:
        return fail_usage("--batch-size must be >= 1")
    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
        return fail_usage(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.crop and not args.content_size:
        return fail_usage("--crop needs --content-size (the square size)")
    if args.tile and (args.tile < 32 or args.tile % 4):
        return fail_usage(f"--tile must be 0 or a multiple of 4 >= 32, got {args.tile}")
    tile_px = args.tile or AUTO_TILE  # the tile size used when tiling (automatic tiling: AUTO_TILE)
    if args.tile_overlap is None:
        args.tile_overlap = min(64, tile_px // 4)
    elif not 0 <= args.tile_overlap < tile_px / 2:
        return fail_usage(f"--tile-overlap must be in [0, tile/2) = [0, {tile_px / 2:g}) for "
                          f"{'--tile' if args.tile else 'the automatic tile of'} {tile_px} px, "
                          f"got {args.tile_overlap}")
    if args.max_pixels < 0:
        return fail_usage(f"--max-pixels must be >= 0 (0 = no limit), got {args.max_pixels}")
    max_pixels = args.max_pixels or None
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.threads < 0:
        return fail_usage("--threads must be >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    failures: list[tuple[str, str]] = []
    model = args.model
    if model == "auto":
        names = available_engines(args.checkpoint_dir)  # "color" first, then the checkpoints, sorted
        model = DEFAULT_MODEL if DEFAULT_MODEL in names else (names[1] if len(names) > 1 else "color")
    try:
        kwargs = {} if model == "color" else {"stats_mode": args.tile_stats}
        engine = load_engine(model, device=args.device, checkpoint_dir=args.checkpoint_dir, **kwargs)
    except (ValueError, FileNotFoundError, OSError) as e:
        return fail_usage(f"cannot load model '{model}': {e}")
    if not args.quiet:
        print(f"engine: {engine.name} ({engine.description}) on {engine.device}", file=sys.stderr)

    if args.tile and engine.kind == "network" and args.tile_stats == "thumbnail" and not args.quiet:
        print("note: tiles use statistics of a 1024 px thumbnail for larger images (fast, approximate); "
              "--tile-stats exact measures the full-resolution statistics", file=sys.stderr)
    elif args.tile and engine.kind == "color" and not args.quiet:
        print("note: the colour engine is pointwise; --tile is ignored", file=sys.stderr)
    out_dir = Path(args.output)
    contents = [_Content(f, rel) for f, rel in _expand(args.content, "content", failures, exclude=out_dir)]
    contents = _unique_outputs(contents, out_dir, args.ext)
    style_files = _expand(args.style, "style", failures)
    style_names = _unique_names([f for f, _ in style_files], [_label(f.stem) for f, _ in style_files], "style")
    if args.mask is not None and not Path(args.mask).is_file():
        return fail_usage(f"--mask '{args.mask}': no such file")

    # ---- styles: statistics computed once
    styles = []  # (label, PreparedStyle)
    style_imgs: list[tuple[str, Image.Image | int]] = []
    for (f, _), style_name in zip(style_files, style_names, strict=True):
        try:
            img = load_image(f, max_pixels=max_pixels)
            if args.style_size:
                from wct.io import center_crop, resize_shorter_side

                img = resize_shorter_side(img, args.style_size)
                if args.crop:
                    img = center_crop(img, args.style_size)
            style_imgs.append((style_name, img))
        except (ImageLoadError, ValueError) as e:
            failures.append((str(f), str(e)))
    if not args.style:
        if not engine.style_names:
            return fail_usage(f"engine '{engine.name}' needs --style images (it has no style bank)")
        idx = args.style_index if args.style_index is not None else list(range(len(engine.style_names)))
        for i in idx:
            if not 0 <= i < len(engine.style_names):
                return fail_usage(f"--style-index {i} out of range; the bank has {engine.style_names}")
        style_imgs = [(engine.style_names[i], i) for i in idx]
    if not style_imgs:
        return _summary(0, failures, "no usable style image")
    try:
        if args.style_weights is not None:
            if len(args.style_weights) != len(style_imgs):
                return fail_usage(f"--style-weights has {len(args.style_weights)} values for "
                                  f"{len(style_imgs)} styles")
            prep = engine.prepare_style([s for _, s in style_imgs], style_weights=args.style_weights,
                                        style_max_side=None)
            styles = [("+".join(_label(n) for n, _ in style_imgs), prep)]
        else:
            for n, s in style_imgs:
                styles.append((_label(n), engine.prepare_style(s, style_max_side=None)))
    except ValueError as e:
        return fail_usage(str(e))
    if not contents:
        return _summary(0, failures, "no content image")

    out_dir.mkdir(parents=True, exist_ok=True)
    ok = 0
    bar = tqdm(total=len(contents) * len(styles), unit="img", disable=args.quiet, dynamic_ncols=True)

    def load(item: _Content):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                img = _prepare_image(item.path, args.content_size, args.crop, args.max_size, engine.min_side,
                                     max_pixels)
            for w in caught:
                tqdm.write(f"note: {w.message}", file=sys.stderr)
            return item, img
        except Exception as e:  # noqa: BLE001 - reported in the summary
            return item, e

    pending = contents
    if args.skip_existing:
        pending = [c for c in contents
                   if not all(_out_path(out_dir, c.rel, lab, args.ext, c.path).exists() for lab, _ in styles)]
        bar.update((len(contents) - len(pending)) * len(styles))
        if not args.quiet or len(pending) < len(contents):
            tqdm.write(f"--skip-existing: skipped {len(contents) - len(pending)} of {len(contents)} content "
                       "file(s) whose outputs all exist", file=sys.stderr)
    saves: list[tuple[str, Future]] = []
    auto_tile_noted = False
    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=2) as io_pool:
            loaded = io_pool.map(load, pending)  # decoding overlaps with stylisation
            for items, imgs in _batches(loaded, args.batch_size):
                if isinstance(imgs, Exception):
                    failures.append((str(items[0].path), str(imgs)))
                    bar.update(len(styles))
                    continue
                tile = args.tile or None
                if tile is None and engine.kind == "network" and max(imgs[0].size) > AUTO_TILE_ABOVE:
                    tile = AUTO_TILE  # bounded memory for very large contents (same size within a batch)
                    if not auto_tile_noted:
                        auto_tile_noted = True
                        tqdm.write(f"note: contents longer than {AUTO_TILE_ABOVE} px are stylised in {AUTO_TILE} px "
                                   f"tiles with global statistics ({args.tile_stats}; --tile-stats exact for "
                                   "final renders, --tile N to choose the tile size)", file=sys.stderr)
                for label, prep in styles:
                    groups = [list(zip(items, imgs, strict=True))]
                    while groups:
                        group = groups.pop(0)
                        try:
                            outs = engine.stylize_batch(
                                [im for _, im in group], prep, alpha=args.alpha,
                                preserve_color=args.preserve_color, mask=args.mask,
                                mask_feather=args.mask_feather, tile=tile,
                                tile_overlap=args.tile_overlap)
                        except Exception as e:  # noqa: BLE001 - reported in the summary
                            if len(group) > 1:  # retry one by one to find the failing file(s)
                                groups = [[g] for g in group] + groups
                            else:
                                failures.append((str(group[0][0].path), f"{type(e).__name__}: {e}"))
                                bar.update(1)
                            continue
                        for (it, _), out in zip(group, outs, strict=True):
                            dst = _out_path(out_dir, it.rel, label, args.ext, it.path)
                            saves.append((str(it.path), io_pool.submit(save_image, out, dst,
                                                                        quality=args.quality)))
                        bar.update(len(group))
            for src, fut in saves:
                try:
                    fut.result()
                    ok += 1
                except Exception as e:  # noqa: BLE001
                    failures.append((src, f"cannot save: {e}"))
    except KeyboardInterrupt:
        bar.close()
        print("\ninterrupted; finished outputs are kept", file=sys.stderr)
        return 130
    bar.close()
    if not args.quiet:
        print(f"{ok} image(s) written to {out_dir} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return _summary(ok, failures)


def _unique_names(srcs: list[Path], names: list[str], what: str) -> list[str]:
    """Make ``names`` (compared case-insensitively) unique: a name shared by sources with different file
    names becomes the source's file name with its extension (``chelsea.jpg``, ``chelsea.png``); a name
    still shared (the same file name twice) gets ``-2``, ``-3``, ... A note lists what was renamed."""
    def dups(ns: list[str]) -> set[str]:
        seen: dict[str, int] = {}
        for n in ns:
            seen[n.lower()] = seen.get(n.lower(), 0) + 1
        return {k for k, v in seen.items() if v > 1}

    clash = dups(names)
    if not clash:
        return names
    file_names: dict[str, set[str]] = {}
    for n, src in zip(names, srcs, strict=True):
        file_names.setdefault(n.lower(), set()).add(src.name.lower())
    # the extension tells chelsea.jpg from chelsea.png; the same file name twice only gets a number
    out = [str(Path(n).with_name(src.name)) if n.lower() in clash and len(file_names[n.lower()]) > 1 else n
           for n, src in zip(names, srcs, strict=True)]
    taken = {n.lower() for n in out}
    counts: dict[str, int] = {}
    for i, n in enumerate(out):
        k = n.lower()
        counts[k] = counts.get(k, 0) + 1
        if counts[k] > 1:
            j = counts[k]
            while f"{n}-{j}".lower() in taken:
                j += 1
            out[i] = f"{n}-{j}"
            taken.add(out[i].lower())
    renamed = [f"'{s}' -> {n}" for s, n, o in zip(srcs, out, names, strict=True) if n != o]
    print(f"note: {what} files share an output name; their names keep the source extension "
          f"(then -2, -3, ...): {', '.join(renamed)}", file=sys.stderr)
    return out


def _unique_outputs(contents: list[_Content], out_dir: Path, ext: str | None) -> list[_Content]:
    """Contents whose outputs would overwrite each other (``chelsea.jpg`` and ``chelsea.png`` with
    ``--ext png``, or the same name given twice) are renamed by :func:`_unique_names`."""
    # "<rel>_stylized_.<ext>": the output name without the style decides a clash (for every style alike)
    keys = [_out_path(out_dir, c.rel, "", ext, c.path).as_posix().lower() for c in contents]
    clash = {k for k in keys if keys.count(k) > 1}
    if not clash:
        return contents
    idx = [i for i, k in enumerate(keys) if k in clash]
    names = iter(_unique_names([contents[i].path for i in idx], [contents[i].rel.as_posix() for i in idx],
                               "content"))
    return [_Content(c.path, Path(next(names))) if k in clash else c for c, k in zip(contents, keys, strict=True)]


def _label(name: str) -> str:
    return name.replace(" #", "-").replace(" ", "-")


def _summary(ok: int, failures: list[tuple[str, str]], why: str | None = None) -> int:
    if why:
        print(f"stylize.py: nothing to do: {why}", file=sys.stderr)
    if failures:
        print(f"\n{len(failures)} failure(s):", file=sys.stderr)
        for src, msg in failures:
            msg = msg.removeprefix(f"'{src}': ").removeprefix(f"'{src}' ")  # wct.io messages name the file
            print(f"  {src}: {msg}", file=sys.stderr)
    return 1 if failures or why else 0


if __name__ == "__main__":
    sys.exit(main())
