"""A model's preprocessing and output handling, parsed from JSON and validated.

Two spellings are accepted: pg_imgembed's own (``{"preprocess": {...}, "output": {...}}``) and a
Hugging Face ``preprocessor_config.json`` for ViT, ConvNeXt, CLIP and BiT (DINOv2) image
processors, read as is. Both resolve to one normalised ``ModelConfig``; that normalised form is
what the model table stores and shows, so what runs is what is displayed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import InvalidConfig
from ..json_checks import check_keys, choice, colour, json_object, nonzero, positive_float, positive_int, triple
from .templates import CLIP_MEAN, CLIP_STD
from .transforms import RESAMPLE

# PIL's integer codes, as HF configs store ``resample``.
_PIL_RESAMPLE_CODES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class Resize:
    """Either ``shortest_edge`` or both ``height`` and ``width`` (exact size); none of them:
    keep the native size (spelled ``"resize": "none"``, HF's ``do_resize: false``)."""

    shortest_edge: int | None = None
    height: int | None = None
    width: int | None = None

    @property
    def native(self) -> bool:
        return self.shortest_edge is None and self.height is None

    @property
    def exact(self) -> tuple[int, int] | None:
        return (self.height, self.width) if self.height is not None and self.width is not None else None


@dataclass(frozen=True)
class PreprocessConfig:
    resize: Resize | None = None  # None: exact resize to the model's fixed input size
    resample: str = "bilinear"
    center_crop: tuple[int, int] | None = None  # (height, width)
    crop_rounding: str = "floor"
    rescale: float | None = 1 / 255
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: str = "RGB"
    layout: str | None = None  # None: taken from the model's input shape
    decode: str = "exact"
    background: tuple[int, int, int] | None = None  # composite alpha onto it; None drops alpha


@dataclass(frozen=True)
class OutputConfig:
    name: str | None = None  # None: the model's first output
    pooling: str = "auto"
    normalize: bool = True


@dataclass(frozen=True)
class ModelConfig:
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    source: str = "pg_imgembed"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        resize = data["preprocess"]["resize"]
        if resize is not None:
            data["preprocess"]["resize"] = {k: v for k, v in resize.items() if v is not None} or "none"
        crop = data["preprocess"]["center_crop"]
        if crop is not None:
            data["preprocess"]["center_crop"] = {"height": crop[0], "width": crop[1]}
        return data

    def with_preprocess(self, **changes: Any) -> ModelConfig:
        return replace(self, preprocess=replace(self.preprocess, **changes))


def parse_config(raw: Mapping[str, Any] | None) -> ModelConfig:
    """Parse either spelling; unknown keys and bad values raise ``InvalidConfig`` naming them."""
    if raw is None:
        return ModelConfig()
    if not isinstance(raw, Mapping):
        raise InvalidConfig(f"model config must be a JSON object, not {type(raw).__name__}")
    if _is_hf_processor(raw):
        return parse_hf_processor(raw)
    check_keys("config", raw, {"preprocess", "output", "source"}, also_accepted=frozenset({"template"}))
    pre = json_object("preprocess", raw.get("preprocess") or {})
    if _is_hf_processor(pre):
        preprocess = parse_hf_processor(pre).preprocess
    else:
        preprocess = _parse_preprocess(pre)
    output = _parse_output(json_object("output", raw.get("output") or {}))
    return ModelConfig(preprocess, output, str(raw.get("source", "pg_imgembed")))


_PREPROCESS_KEYS = {f for f in PreprocessConfig.__dataclass_fields__}
_OUTPUT_KEYS = {f for f in OutputConfig.__dataclass_fields__}


def _parse_preprocess(pre: Mapping[str, Any]) -> PreprocessConfig:
    check_keys("preprocess", pre, _PREPROCESS_KEYS)
    d = PreprocessConfig()
    return PreprocessConfig(
        resize=_parse_resize(pre["resize"]) if pre.get("resize") is not None else None,
        resample=choice("preprocess.resample", pre.get("resample", d.resample), RESAMPLE),
        center_crop=_parse_size("preprocess.center_crop", pre["center_crop"]) if pre.get("center_crop") is not None else None,
        crop_rounding=choice("preprocess.crop_rounding", pre.get("crop_rounding", d.crop_rounding), ("floor", "round")),
        rescale=_parse_rescale(pre, d.rescale),
        mean=triple("preprocess.mean", pre.get("mean"), float),
        std=nonzero("preprocess.std", triple("preprocess.std", pre.get("std"), float)),
        channel_order=choice("preprocess.channel_order", str(pre.get("channel_order", "RGB")).upper(), ("RGB", "BGR")),
        layout=choice("preprocess.layout", str(pre["layout"]).upper(), ("NCHW", "NHWC")) if pre.get("layout") else None,
        decode=choice("preprocess.decode", pre.get("decode", d.decode), ("exact", "fast")),
        background=colour("preprocess.background", pre.get("background")),
    )


def _parse_rescale(pre: Mapping[str, Any], default: float | None) -> float | None:
    if "rescale" not in pre:
        return default
    return None if pre["rescale"] is None else positive_float("preprocess.rescale", pre["rescale"])


def _parse_output(out: Mapping[str, Any]) -> OutputConfig:
    check_keys("output", out, _OUTPUT_KEYS)
    normalize = out.get("normalize", True)
    if not isinstance(normalize, bool):
        raise InvalidConfig(f"output.normalize must be true or false, not {normalize!r}")
    name = out.get("name")
    return OutputConfig(
        name=str(name) if name is not None else None,
        pooling=choice("output.pooling", out.get("pooling", "auto"), ("auto", "mean", "cls", "none")),
        normalize=normalize,
    )


def _parse_resize(value: Any) -> Resize:
    if value == "none":
        return Resize()
    if isinstance(value, Mapping) and set(value) == {"shortest_edge"}:
        return Resize(shortest_edge=positive_int("preprocess.resize.shortest_edge", value["shortest_edge"]))
    height, width = _parse_size("preprocess.resize", value)
    return Resize(height=height, width=width)


def _parse_size(what: str, value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        size = positive_int(what, value)
        return size, size
    if isinstance(value, Mapping) and set(value) == {"height", "width"}:
        return positive_int(f"{what}.height", value["height"]), positive_int(f"{what}.width", value["width"])
    raise InvalidConfig(
        f"{what} must be an integer or {{\"height\": H, \"width\": W}}"
        + (" or {\"shortest_edge\": S}" if what.endswith("resize") else "")
        + f", not {value!r}"
    )


# ---------------------------------------------------------------- Hugging Face image processors

_HF_TYPES = ("ViTImageProcessor", "ConvNextImageProcessor", "CLIPImageProcessor", "BitImageProcessor")


def _is_hf_processor(raw: Mapping[str, Any]) -> bool:
    return "image_processor_type" in raw or "feature_extractor_type" in raw


def hf_processor_type(raw: Mapping[str, Any]) -> str:
    given = str(raw.get("image_processor_type") or raw.get("feature_extractor_type"))
    name = given.removesuffix("Fast").replace("FeatureExtractor", "ImageProcessor")
    if name not in _HF_TYPES:
        raise InvalidConfig(
            f"unsupported image processor type {given!r}",  # as the config spells it
            hint="Supported Hugging Face image processors: " + ", ".join(_HF_TYPES)
            + ". Other models can use pg_imgembed's own preprocess config.",
        )
    return name


def parse_hf_processor(raw: Mapping[str, Any]) -> ModelConfig:
    """Translate a ``preprocessor_config.json`` with the defaults each processor class has."""
    kind = hf_processor_type(raw)
    defaults = {
        "ViTImageProcessor": dict(size={"height": 224, "width": 224}, resample=2, mean=(0.5,) * 3, std=(0.5,) * 3),
        # ConvNeXt's processor defaults to IMAGENET_STANDARD (0.5), not the ImageNet statistics.
        # Bicubic (3), the default of transformers 5 (PR #42934: the original ConvNeXt's) and of
        # fastembed; transformers 4.x defaulted to bilinear, so configs that omit resample differed.
        "ConvNextImageProcessor": dict(size={"shortest_edge": 384}, resample=3, mean=(0.5,) * 3, std=(0.5,) * 3),
        "CLIPImageProcessor": dict(size={"shortest_edge": 224}, resample=3, mean=CLIP_MEAN, std=CLIP_STD, crop=224),
        "BitImageProcessor": dict(size={"shortest_edge": 224}, resample=3, mean=CLIP_MEAN, std=CLIP_STD, crop=224),
    }[kind]
    resample = raw.get("resample", defaults["resample"])
    resample_name = _PIL_RESAMPLE_CODES.get(resample) if isinstance(resample, int) else None
    if resample_name is None:
        raise InvalidConfig(f"{kind}: resample must be a PIL filter code 0-5, not {resample!r}")

    size = raw.get("size", defaults["size"])
    if isinstance(size, int):  # old configs: ViT meant a square, the others the shortest edge
        size = {"height": size, "width": size} if kind == "ViTImageProcessor" else {"shortest_edge": size}
    resize = Resize()  # do_resize false: the image keeps its size (and is only cropped)
    crop: tuple[int, int] | None = None
    if raw.get("do_resize", True):
        if kind == "ConvNextImageProcessor":
            resize, crop = _convnext_resize(size, raw.get("crop_pct", 224 / 256))
        else:
            resize = _parse_resize(size)
    if kind != "ConvNextImageProcessor" and raw.get("do_center_crop", "crop" in defaults):
        crop = _parse_size(f"{kind}.crop_size", raw.get("crop_size", defaults.get("crop", 224)))

    do_normalize = raw.get("do_normalize", True)
    return ModelConfig(
        PreprocessConfig(
            resize=resize,
            resample=resample_name,
            center_crop=crop,
            crop_rounding="floor",
            rescale=positive_float(f"{kind}.rescale_factor", raw.get("rescale_factor", 1 / 255))
            if raw.get("do_rescale", True) else None,
            mean=triple(f"{kind}.image_mean", raw.get("image_mean", defaults["mean"]), float) if do_normalize else None,
            std=nonzero(
                f"{kind}.image_std", triple(f"{kind}.image_std", raw.get("image_std", defaults["std"]), float)
            ) if do_normalize else None,
            layout="NCHW",
        ),
        OutputConfig(),
        source=kind,
    )


def _convnext_resize(size: Any, crop_pct: Any) -> tuple[Resize, tuple[int, int] | None]:
    if not (isinstance(size, Mapping) and "shortest_edge" in size):
        raise InvalidConfig(f"ConvNextImageProcessor: size must have shortest_edge, not {size!r}")
    edge = positive_int("ConvNextImageProcessor.size.shortest_edge", size["shortest_edge"])
    if edge >= 384:  # ConvNeXt warps large inputs without cropping
        return Resize(height=edge, width=edge), None
    pct = positive_float("ConvNextImageProcessor.crop_pct", crop_pct if crop_pct is not None else 224 / 256)
    if pct > 1:
        raise InvalidConfig(f"ConvNextImageProcessor: crop_pct must be in (0, 1], not {crop_pct!r}")
    return Resize(shortest_edge=int(edge / pct)), (edge, edge)
