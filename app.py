"""Gradio web app: upload a content photo and a style image, get the stylised picture.

Run ``python app.py`` (http://127.0.0.1:7860), ``python app.py --host 0.0.0.0 --port 8080`` to serve on the
network, ``--share`` for a temporary public gradio.live link (off by default; it is the only option that
uses the network). Nothing is downloaded: the engines are colour transfer (no weights) and every checkpoint
in ``checkpoints/`` (see ``models.inference``); the examples are written at run time from scikit-image's
bundled photos.

Engines are listed in the "Model" selector. A missing or broken checkpoint is reported at the top of the
page and colour transfer still works. Checkpoint engines carry a *style bank* (style statistics of a few
training paintings), so they work without a style image.

Programmatic use: ``build_demo(engines)`` returns the :class:`gradio.Blocks` (tests inject a tiny engine
this way), and the running app has the named API endpoint ``/stylize``::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    out_path = client.predict(handle_file("photo.jpg"), handle_file("painting.jpg"), "color", 1.0, False,
                              1024, "", api_name="/stylize")

Design notes:
- Uploaded files are decoded by :func:`wct.io.load_image` (``preprocess=False`` on the event), not by
  Gradio, so the app refuses decompression bombs before decoding, composites transparency on white,
  applies EXIF orientation and reports truncated/corrupt files with the same messages as the batch CLI.
  The result is a ``gr.Image(type="pil", format="png")`` (lossless, with a download button).
- The stylisation event runs in Gradio's queue with ``concurrency_limit`` (default 1: one model call at a
  time, the others wait in line with their position shown).
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

# No analytics / telemetry / version-check requests: they would hang or fail on an offline machine.
# Set before gradio (and huggingface_hub) are imported; a user's explicit setting wins.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

# DEFAULT_MODEL: the model selected when the page opens, if its checkpoint is there (else the first engine,
# ``color``): the Van Gogh demo checkpoint, which beats colour transfer both in domain accuracy (38 % vs 18 %
# on artworks-mini's test photos) and visibly in the grid (checkpoints/README.md); --default-model changes it.
from models.inference import DEFAULT_MODEL  # noqa: E402
from wct.io import DEFAULT_MAX_PIXELS, ImageLoadError, ImageNotice, load_image, save_image  # noqa: E402

__all__ = ["build_demo", "example_rows", "load_engines", "make_examples", "main", "order_engines",
           "stylize_at_strength"]

log = logging.getLogger("svd_wct.app")

ROOT = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT_DIR = ROOT / "checkpoints"
#: Value of the "Style" selector (and of the API's ``style_bank`` argument) meaning "use the uploaded image".
UPLOADED = "Uploaded style image"
#: Range of the "Max resolution" slider (longer side of the content, in pixels).
MIN_RESOLUTION, MAX_RESOLUTION = 64, 4096


class Engine(Protocol):
    """What the app needs from an engine (``models.inference`` contract, docs/DESIGN.md)."""

    name: str

    def stylize(self, content: Image.Image, style: Image.Image | None, *, alpha: float = 1.0,
                preserve_color: bool = False, style_index: int = 0) -> Image.Image: ...


# --------------------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------------------
def _style_bank_names(engine: Any) -> list[str]:
    """Names of an engine's style bank entries ([] for engines without one, e.g. ``color``)."""
    for attr in ("style_bank_names", "style_names"):
        names = getattr(engine, attr, None)
        if names:
            return [str(n) for n in names]
    return []


def load_engines(checkpoint_dir: str | os.PathLike = DEFAULT_CHECKPOINT_DIR, *, device: str = "cpu",
                 extra: Sequence[str | os.PathLike] = ()) -> tuple[dict[str, Engine], list[str]]:
    """Load every available engine: ``color`` plus each checkpoint in ``checkpoint_dir`` and ``extra``.

    A checkpoint that fails to load is skipped and reported, never fatal (colour transfer needs no
    weights and always works).

    Args:
        checkpoint_dir: folder of ``NAME.safetensors`` + ``NAME.json`` checkpoints.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
        extra: further checkpoint files (``.safetensors`` paths) given on the command line.

    Returns:
        ``(engines, notes)``: engines by name, in display order, and human-readable notes about what is
        missing or could not be loaded (shown at the top of the page).
    """
    from models.inference import describe_engines, load_engine

    notes: list[str] = []
    engines: dict[str, Engine] = {}
    ckpt_dir = Path(checkpoint_dir)
    try:
        described = describe_engines(ckpt_dir)
    except Exception as exc:  # noqa: BLE001 - report, then fall back to colour transfer
        notes.append(f"Could not list the checkpoints in `{ckpt_dir}`: {exc}")
        described = [{"name": "color", "kind": "color"}]
    wanted: list[tuple[str, str]] = []  # (display name, what to load)
    for entry in described:
        if entry.get("kind") == "missing":
            notes.append(f"Checkpoint **{entry['name']}** is not usable: {entry.get('note', 'incomplete')}.")
        else:
            wanted.append((entry["name"], entry["name"]))
    wanted += [(Path(p).stem, str(p)) for p in extra]
    for name, what in wanted:
        try:
            engine = load_engine(what, device=device, checkpoint_dir=ckpt_dir)
        except Exception as exc:  # noqa: BLE001 - a broken checkpoint must not take the app down
            log.warning("could not load engine %r: %s", what, exc)
            notes.append(f"Checkpoint **{name}** could not be loaded ({type(exc).__name__}: {exc}); "
                         "the other engines still work.")
            continue
        engines[str(getattr(engine, "name", name))] = engine
    if set(engines) <= {"color"}:
        shown = ckpt_dir.resolve()
        shown = shown.relative_to(Path.cwd()) if shown.is_relative_to(Path.cwd()) else shown
        notes.append(
            f"No style-transfer checkpoint found in `{shown}/` (expected `NAME.safetensors` + "
            "`NAME.json`): only **colour transfer** is available. Train one with `train.py` or copy a "
            "checkpoint there, or pass `--model PATH`."
        )
    return engines, notes


# --------------------------------------------------------------------------------------------------
# Examples (written at run time from scikit-image's bundled photos; nothing is committed or downloaded)
# --------------------------------------------------------------------------------------------------
def _default_cache_dir() -> Path:
    if os.environ.get("SVD_WCT_CACHE"):
        return Path(os.environ["SVD_WCT_CACHE"]) / "examples"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "svd-wct" / "examples"


def make_examples(folder: str | os.PathLike | None = None) -> tuple[list[Path], list[Path]]:
    """Write the example content photos and style images (once) and return their paths.

    Contents are scikit-image's bundled photos (coffee, astronaut, rocket, chelsea the cat); styles are
    derived from bundled images: the gravel texture coloured with a sunset palette, an
    immunohistochemistry stain, and the Hubble deep field. Each is at most 512 px on its longer side (JPEG, ~50 KB).

    Args:
        folder: where to write them; default ``$SVD_WCT_CACHE/examples``, else
            ``$XDG_CACHE_HOME/svd-wct/examples`` (``~/.cache/svd-wct/examples``).

    Returns:
        ``(contents, styles)``: lists of file paths.
    """
    import skimage.data as data
    from PIL import ImageFilter, ImageOps

    from wct.io import resize_max_side

    folder = Path(folder) if folder is not None else _default_cache_dir()

    def gravel_sunset() -> Image.Image:
        g = Image.fromarray(data.gravel()).filter(ImageFilter.SMOOTH_MORE)
        return ImageOps.colorize(ImageOps.autocontrast(g), black="#1d0b3a", mid="#c8385a", white="#ffc56b")

    def hubble() -> Image.Image:
        img = Image.fromarray(data.hubble_deep_field())
        return ImageOps.autocontrast(img.crop((0, 0, 640, 640)), cutoff=1)

    contents = {
        "coffee": lambda: Image.fromarray(data.coffee()),
        "astronaut": lambda: Image.fromarray(data.astronaut()),
        "rocket": lambda: Image.fromarray(data.rocket()),
        "chelsea": lambda: Image.fromarray(data.chelsea()),
    }
    styles = {  # the examples pair content i with style i % 3
        "style_gravel_sunset": gravel_sunset,
        "style_stain": lambda: Image.fromarray(data.immunohistochemistry()),
        "style_hubble": hubble,
    }
    out: tuple[list[Path], list[Path]] = ([], [])
    for group, makers in zip(out, (contents, styles), strict=True):
        for name, make in makers.items():
            path = folder / f"{name}.jpg"
            if not path.is_file():
                save_image(resize_max_side(make().convert("RGB"), 512), path, quality=90)
            group.append(path)
    return out


def stylize_at_strength(engine: Engine, content: Image.Image, style: Image.Image | None, strength: float,
                        **kwargs: Any) -> Image.Image:
    """Run ``engine.stylize`` for the "Strength" slider value ``strength`` in [0, 1].

    Colour transfer: ``strength`` is the WCT blend ``alpha`` itself. Network engines: the network runs with
    its learned WCT blends (``alpha=None``; overriding a trained network's blends, about 0.6, with 1.0 gives
    results it never saw in training: ringing colour edges on the demo checkpoints), then
    ``strength * out + (1 - strength) * content`` per pixel (0 = the content unchanged, 1 = the network's
    output as trained).

    Args:
        engine: the engine. content: RGB content image. style: style image or ``None`` (style bank).
        strength: in [0, 1].
        **kwargs: passed to ``engine.stylize`` (``preserve_color``, ``style_index``, ``tile``, ...).

    Returns:
        An RGB image of the content's size, keeping the engine result's ``info`` (notices).
    """
    if getattr(engine, "kind", None) != "network":
        return engine.stylize(content, style, alpha=float(strength), **kwargs)
    out = engine.stylize(content, style, alpha=None, **kwargs)
    if strength >= 1.0:
        return out
    blended = Image.blend(content.convert("RGB").resize(out.size), out.convert("RGB"), float(strength))
    blended.info.update(out.info)
    return blended


def order_engines(engines: Mapping[str, Engine], first: str | None) -> dict[str, Engine]:
    """The engines with ``first`` moved to the front (the model selected when the page opens).

    Args:
        engines: engines by name, in display order.
        first: name to put first; ``None`` or a name not in ``engines`` keeps the order.

    Returns:
        A new dict: ``first`` (when present), then the others in their order.
    """
    if first is None or first not in engines:
        return dict(engines)
    return {first: engines[first], **{k: v for k, v in engines.items() if k != first}}


def example_rows(contents: Sequence[str | os.PathLike], styles: Sequence[str | os.PathLike],
                 names: Sequence[str], banks: Mapping[str, Sequence[str]]) -> list[list[str | None]]:
    """``[content, style, model]`` rows for ``gr.Examples``: every model gets examples.

    The first model (the one selected when the page opens) gets one row per content photo, each paired with
    style ``i % len(styles)``; every other model gets rows for the first two photos. Models with a style bank
    (the shipped checkpoints) get no style image, so their rows stylise with the first painting of the bank;
    models without one use the example style images (and get no rows when there are none).

    Args:
        contents: content image paths. styles: style image paths (may be empty).
        names: model names in display order. banks: style-bank entry names per model (``[]``: none).

    Returns:
        Rows of ``[content path, style path or None, model name]``.
    """
    rows: list[list[str | None]] = []
    for k, name in enumerate(names):
        has_bank = bool(banks.get(name))
        if not has_bank and not styles:
            continue
        for i, content in enumerate(contents if k == 0 else list(contents)[:2]):
            style = None if has_bank else os.fspath(styles[i % len(styles)])
            rows.append([os.fspath(content), style, name])
    return rows


# --------------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------------
def _engines_markdown(engines: Mapping[str, Engine], notes: Sequence[str]) -> str:
    lines = []
    for name, engine in engines.items():
        bank = _style_bank_names(engine)
        what = "colour transfer (no weights)" if name == "color" else "SVD-WCT network"
        if bank:  # a range, not 16 names: the "Style source" selector lists them
            what += f", style bank of {len(bank)}" + (f" ({bank[0]} … {bank[-1]})" if len(bank) > 1 else
                                                      f" ({bank[0]})")
        status = getattr(engine, "status", "")
        if status:  # the model card's one-line verdict, up to its first ';'
            what += f" — *{status.split(';')[0].strip()}*"
        lines.append(f"- `{name}`: {what}")
    text = "**Models available:**\n" + "\n".join(lines) if lines else "**No model available.**"
    if notes:
        text += "\n\n" + "\n".join(f"- ⚠️ {n}" for n in notes)
    return text


def _file_path(value: Any) -> str | None:
    """The local path of an image input (``preprocess=False`` gives the raw payload), or None."""
    if value is None or value == "":
        return None
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, Mapping):
        path = value.get("path")
        if path:
            return str(path)
        if value.get("url"):
            raise gr.Error("Images must be uploaded as files; URLs are not fetched (the app works offline).")
        return None
    raise gr.Error(f"Unexpected image input of type {type(value).__name__}; upload an image file.")


def build_demo(
    engines: Mapping[str, Engine] | Iterable[Engine],
    *,
    notes: Sequence[str] = (),
    concurrency_limit: int = 1,
    max_resolution: int = 1024,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    tile_above: int = 1024,
    examples: bool | tuple[Sequence[Path], Sequence[Path]] = True,
    title: str = "SVD-WCT style transfer",
) -> gr.Blocks:
    """Build the Gradio Blocks app around the given engines (not launched, queue configured).

    Args:
        engines: engines by name (``{"color": ...}``) or an iterable of engines with a ``.name``; each has
            ``.stylize(content, style, *, alpha, preserve_color, style_index)`` (``models.inference``).
            The first one is selected by default.
        notes: Markdown lines shown at the top (missing checkpoints, load errors).
        concurrency_limit: how many stylisations run at the same time (the others queue), >= 1.
        max_resolution: default of the "Max resolution" slider: the content's longer side is reduced to
            this many pixels (in [64, 4096]); the style image is reduced to the same limit.
        max_pixels: uploads whose header declares more pixels are refused before decoding (``None``: no
            limit).
        tile_above: network engines stylise contents whose longer side exceeds this in tiles of this size
            with global statistics (``models.inference``), so memory stays bounded.
        examples: ``True`` for the built-in examples (:func:`make_examples`), ``False`` for none, or
            ``(contents, styles)`` file lists.
        title: page title.

    Returns:
        The ``gr.Blocks``; its stylisation event is the API endpoint ``/stylize`` with arguments
        ``(content, style, model, alpha, preserve_color, max_resolution, style_bank)``.

    Raises:
        ValueError: no engine, or ``concurrency_limit`` < 1, or ``max_resolution`` out of range.
    """
    if not isinstance(engines, Mapping):
        engines = {str(e.name): e for e in engines}
    engines = dict(engines)
    if not engines:
        raise ValueError("build_demo needs at least one engine (e.g. models.inference.load_engine('color'))")
    if concurrency_limit < 1:
        raise ValueError(f"concurrency_limit must be >= 1, got {concurrency_limit}")
    if not MIN_RESOLUTION <= max_resolution <= MAX_RESOLUTION:
        raise ValueError(f"max_resolution must be in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {max_resolution}")
    names = list(engines)
    banks = {name: _style_bank_names(e) for name, e in engines.items()}
    accepted = {name: set(inspect.signature(e.stylize).parameters) for name, e in engines.items()}

    def bank_choices(model: str) -> list[str]:
        return [UPLOADED, *banks.get(model, [])]

    def stylize(content, style, model, alpha, preserve_color, max_resolution, style_bank,
                progress=gr.Progress(track_tqdm=True)):
        """Stylise `content` with `style` (or a style-bank entry) using the engine `model`.

        Args:
            content: content image file (required).
            style: style image file; optional for models with a style bank.
            model: engine name, one of the names listed in the "Model" selector (e.g. "color").
            alpha: strength in [0, 1] (0 = content unchanged, 1 = full style: for networks the model as
                trained, lower values blend its output with the content).
            preserve_color: keep the content's colours (luminance-only transfer).
            max_resolution: longer side of the output in pixels (larger contents are downscaled), 64-4096.
            style_bank: "" or "Uploaded style image" to use `style`, else the name of a style-bank entry.
        """
        t0 = time.perf_counter()
        if model not in engines:
            raise gr.Error(f"Unknown model {model!r}; available: {', '.join(names)}.")
        engine = engines[model]
        try:
            alpha = float(alpha)
            max_res = int(max_resolution)
        except (TypeError, ValueError):
            raise gr.Error("Strength must be a number in [0, 1] and max resolution an integer.") from None
        if not 0.0 <= alpha <= 1.0:
            raise gr.Error(f"Strength (alpha) must be in [0, 1], got {alpha}.")
        if not MIN_RESOLUTION <= max_res <= MAX_RESOLUTION:
            raise gr.Error(f"Max resolution must be in [{MIN_RESOLUTION}, {MAX_RESOLUTION}] px, got {max_res}.")
        content_path, style_path = _file_path(content), _file_path(style)
        if content_path is None:
            raise gr.Error("Upload a content image first.")
        bank = banks[model]
        style_bank = style_bank or UPLOADED
        if style_bank != UPLOADED and style_bank not in bank:
            raise gr.Error(f"{style_bank!r} is not in the style bank of {model!r} "
                           f"(available: {', '.join(bank) if bank else 'none'}).")
        min_side = getattr(engine, "min_side", None)

        progress(0.05, desc="Reading images")
        try:
            with warnings.catch_warnings():  # notices are shown in the page instead (gr.Info)
                warnings.simplefilter("ignore", ImageNotice)
                content_img = load_image(content_path, max_pixels=max_pixels, max_side=max_res,
                                         min_side=min_side, name="The content image")
                style_img = None
                if style_path is not None and style_bank == UPLOADED:
                    style_img = load_image(style_path, max_pixels=max_pixels, max_side=max_res,
                                           min_side=min_side, name="The style image")
        except ImageLoadError as exc:
            raise gr.Error(str(exc)) from None
        for note in [*content_img.info.get("notices", []),
                     *(style_img.info.get("notices", []) if style_img is not None else [])]:
            gr.Info(note)
        style_index = 0
        if style_img is None:
            if not bank:
                raise gr.Error(f"Upload a style image: the {model!r} engine has no style bank.")
            if style_bank == UPLOADED:
                style_bank = bank[0]
                gr.Info(f"No style image given: using {style_bank!r} from the {model!r} style bank.")
            style_index = bank.index(style_bank)
        elif style_path is not None and style_bank != UPLOADED:
            gr.Info(f"Using {style_bank!r} from the style bank; the uploaded style image is ignored.")

        progress(0.2, desc=f"Stylising with {model}")

        def report(fraction: float, message: str) -> None:
            progress(0.2 + 0.75 * float(fraction), desc=f"{model}: {message}")

        kwargs: dict[str, Any] = {}
        if "progress" in accepted[model]:
            kwargs["progress"] = report
        if getattr(engine, "kind", None) == "network" and max(content_img.size) > tile_above:
            kwargs["tile"] = tile_above  # global-statistics tiling keeps memory bounded
        try:
            with warnings.catch_warnings():  # engines are thread-safe (models.inference)
                warnings.simplefilter("ignore", ImageNotice)
                out = stylize_at_strength(engine, content_img, style_img, alpha,
                                          preserve_color=bool(preserve_color), style_index=style_index, **kwargs)
        except ValueError as exc:  # bad input the engine detected (sizes, etc.)
            raise gr.Error(f"{model}: {exc}") from None
        except MemoryError:
            raise gr.Error("Out of memory: lower the max resolution.") from None
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower():
                raise gr.Error("Out of memory on the device: lower the max resolution.") from None
            log.exception("stylisation failed")
            raise gr.Error(f"Stylisation failed ({type(exc).__name__}: {exc}).") from None
        for note in getattr(out, "info", {}).get("notices", []):
            if note not in content_img.info.get("notices", []):
                gr.Info(note)
        log.info("stylised %dx%d with %s in %.2f s", content_img.width, content_img.height, model,
                 time.perf_counter() - t0)
        progress(1.0, desc="Done")
        return out

    def on_model_change(model: str):
        choices = bank_choices(model)
        return gr.update(choices=choices, value=UPLOADED, visible=len(choices) > 1)

    # delete_cache: uploads and results older than 1 h are removed every 30 min (long-running servers).
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        gr.Markdown(
            f"# {title}\n"
            "Whitening-and-colouring style transfer on a robust differentiable eigendecomposition "
            "(Wang et al., *Robust Differentiable SVD*, TPAMI 2021). Upload a **content** photo and a "
            "**style** image, pick a model and press **Stylise**."
        )
        gr.Markdown(_engines_markdown(engines, notes), elem_id="engines-status")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                content_in = gr.Image(label="Content", type="filepath", image_mode=None, format="png",
                                      sources=["upload", "clipboard"], elem_id="content-image", height=300)
                style_in = gr.Image(label="Style", type="filepath", image_mode=None, format="png",
                                    sources=["upload", "clipboard"], elem_id="style-image", height=300)
            with gr.Column(scale=1):
                model_in = gr.Dropdown(names, value=names[0], label="Model", elem_id="model",
                                       info="color: colour statistics only (no weights); others: trained "
                                            "SVD-WCT networks from checkpoints/.")
                first_bank = bank_choices(names[0])
                bank_in = gr.Dropdown(first_bank, value=UPLOADED, label="Style source",
                                      visible=len(first_bank) > 1, elem_id="style-bank",
                                      info="Your uploaded style image (without one: the first style of the "
                                           "bank), or a painting from the model's style bank.")
                alpha_in = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="Strength (alpha)",
                                     info="0 = content unchanged, 1 = full style (networks: as trained).",
                                     elem_id="alpha")
                keep_in = gr.Checkbox(False, label="Preserve content colours", elem_id="preserve-color")
                res_in = gr.Slider(MIN_RESOLUTION, MAX_RESOLUTION, value=max_resolution, step=64,
                                   label="Max resolution (px, longer side)", elem_id="max-resolution",
                                   info="Larger images are downscaled first; bigger is slower.")
                run_btn = gr.Button("Stylise", variant="primary", elem_id="run")
            with gr.Column(scale=1):
                result = gr.Image(label="Result", type="pil", format="png", interactive=False,
                                  buttons=["download", "fullscreen"], elem_id="result", height=420)
        if examples:
            if examples is True:
                try:
                    contents, styles = make_examples()
                except Exception as exc:  # noqa: BLE001 - examples are a convenience, never fatal
                    log.warning("could not write the example images: %s", exc)
                    contents, styles = [], []
            else:
                contents, styles = examples
            rows = example_rows(contents, styles, names, banks)
            if rows:
                gr.Examples(rows, inputs=[content_in, style_in, model_in],
                            label="Examples (scikit-image photos; rows without a style image use the model's "
                                  "style bank)", examples_per_page=8)
        model_in.change(on_model_change, model_in, bank_in, queue=False, api_visibility="private")
        run_btn.click(
            stylize,
            inputs=[content_in, style_in, model_in, alpha_in, keep_in, res_in, bank_in],
            outputs=result,
            api_name="stylize",
            preprocess=False,
            concurrency_limit=concurrency_limit,
            concurrency_id="model",
        )
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=64)
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python app.py [--host H] [--port P] [--share] [--device D] ...``.

    Returns:
        Exit status once the server stops: 0, or 2 when the server cannot start (e.g. the port is taken).
        Usage errors exit with 2 through ``argparse``.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=7860, help="TCP port")
    p.add_argument("--share", action="store_true", help="create a temporary public gradio.live link (network)")
    p.add_argument("--checkpoint-dir", default=str(DEFAULT_CHECKPOINT_DIR), help="folder of checkpoints")
    p.add_argument("--model", action="append", default=[], metavar="PATH",
                   help="extra checkpoint file (.safetensors with its .json beside it); repeatable")
    p.add_argument("--default-model", default=DEFAULT_MODEL, metavar="NAME",
                   help="model selected when the page opens (color, or a checkpoint name); the shipped default "
                        "falls back to color when its checkpoint is missing")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="inference device")
    p.add_argument("--concurrency", type=int, default=1, help="stylisations running at the same time")
    p.add_argument("--max-resolution", type=int, default=1024, help="default max side of the content (px)")
    p.add_argument("--no-examples", action="store_true", help="do not write/show the example images")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse uploads whose header declares more than N pixels (width x height) as possible "
                        "decompression bombs, before decoding (0 = no limit)")
    args = p.parse_args(argv)
    if args.max_pixels < 0:
        p.error(f"--max-pixels must be >= 0 (0 = no limit), got {args.max_pixels}")
    if args.concurrency < 1:
        p.error(f"--concurrency must be >= 1, got {args.concurrency}")
    if not MIN_RESOLUTION <= args.max_resolution <= MAX_RESOLUTION:
        p.error(f"--max-resolution must be in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {args.max_resolution}")
    if not 0 <= args.port <= 65535:
        p.error(f"--port must be in [0, 65535], got {args.port}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up probes
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is available (use --device cpu)")
    engines, notes = load_engines(args.checkpoint_dir, device=args.device, extra=args.model)
    if args.default_model not in engines and args.default_model != DEFAULT_MODEL:
        p.error(f"--default-model {args.default_model!r} is not available; models: {', '.join(engines)}")
    engines = order_engines(engines, args.default_model)
    for note in notes:
        log.warning(note.replace("**", "").replace("`", ""))
    demo = build_demo(engines, notes=notes, concurrency_limit=args.concurrency,
                      max_resolution=args.max_resolution, max_pixels=args.max_pixels or None,
                      examples=not args.no_examples)
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True,
                    ssr_mode=False, mcp_server=False, max_file_size="100mb", footer_links=["api"])
    except OSError as e:  # gradio: "Cannot find empty port in range: ..." (port taken), bad --host, ...
        reason = str(e).split(". You can specify")[0]  # drop gradio's GRADIO_SERVER_PORT advice
        print(f"app.py: error: cannot serve on {args.host}:{args.port} ({reason}); the port may be in use by "
              f"another program: choose another one with --port N", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
