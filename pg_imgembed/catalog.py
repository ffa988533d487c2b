"""Preconfigured models: known model ids with their template, dimensions and licence.

Each entry says where the ONNX file sits in the model's Hugging Face repository. Repositories that
ship no ONNX file need a one-time export (``optimum-cli export onnx``) before import. Pure data:
the SQL build creates the ``imgembed.catalog`` view from it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogModel:
    model_id: str
    template: str | None  # image towers' preprocessing; None for text towers (their tokenizer says it)
    dimensions: int
    license: str
    onnx_file: str | None  # path in the repository; None: the repository has no ONNX export
    output: str | None = None  # which ONNX output is the embedding (None: the first)
    notes: str = ""
    modality: str = "image"  # or "text": a text tower, loaded beside the image tower of its model


CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel("Qdrant/resnet50-onnx", "convnext", 2048, "apache-2.0", "model.onnx",
                 notes="fastembed; ResNet-50 pooled features"),
    CatalogModel("Qdrant/clip-ViT-B-32-vision", "clip", 512, "mit", "model.onnx",
                 notes="fastembed; CLIP ViT-B/32 image tower, projected embeddings"),
    CatalogModel("Qdrant/clip-ViT-B-32-text", None, 512, "mit", "model.onnx", modality="text",
                 notes="fastembed; CLIP ViT-B/32 text tower: load it under the name of Qdrant/clip-ViT-B-32-vision"),
    CatalogModel("Qdrant/Unicom-ViT-B-16", "clip", 768, "apache-2.0", "model.onnx", notes="fastembed"),
    CatalogModel("Qdrant/Unicom-ViT-B-32", "clip", 512, "apache-2.0", "model.onnx", notes="fastembed"),
    CatalogModel("google/vit-base-patch16-224", "vit", 768, "apache-2.0", None, output="last_hidden_state",
                 notes="export with optimum-cli export onnx --model google/vit-base-patch16-224 DIR"),
    CatalogModel("facebook/convnext-tiny-224", "convnext", 768, "apache-2.0", None, output="pooler_output",
                 notes="export with optimum-cli export onnx --model facebook/convnext-tiny-224 DIR"),
    CatalogModel("openai/clip-vit-base-patch32", "clip", 512, "mit", None, output="image_embeds",
                 notes="no ONNX: export CLIPVisionModelWithProjection (and CLIPTextModelWithProjection for its text tower)"),
    CatalogModel("facebook/dinov2-small", "dinov2", 384, "apache-2.0", None, output="last_hidden_state",
                 notes="export with optimum-cli export onnx --model facebook/dinov2-small DIR"),
)


def find(model_id: str) -> CatalogModel | None:
    return next((m for m in CATALOG if m.model_id == model_id), None)
