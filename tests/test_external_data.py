"""Models must be self-contained: the wire-format reader finds every tensor that refers to
external data, as onnx itself sees them (no server needed)."""

from pathlib import Path

import onnx
import pytest

from pg_imgembed.errors import InvalidModel
from pg_imgembed.onnx.external_data import Malformed, external_tensors
from pg_imgembed.onnx.session import check_self_contained
from tests import onnx_models
from tests.test_trust import reading_model


@pytest.mark.parametrize("where", ["initializer", "sparse", "attribute", "subgraph"])
def test_external_tensors_are_found_wherever_they_are(where):
    assert ("leak", "postgresql.conf") in external_tensors(reading_model(where))
    with pytest.raises(InvalidModel) as refused:
        check_self_contained(reading_model(where))
    assert refused.value.message == ('the model refers to external data (tensor "leak" in file "postgresql.conf"): '
                                     "models must be self-contained")


def test_a_model_onnx_saved_with_external_data_is_found_and_a_plain_one_is_not(tmp_path: Path):
    plain = onnx_models.conv_net()
    assert external_tensors(plain) == []
    model = onnx.load_from_string(onnx_models.conv_net(extra_dims=512))
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=64)
    saved = (tmp_path / "m.onnx").read_bytes()
    expected = {(t.name, "weights.bin") for t in onnx.load(str(tmp_path / "m.onnx"), load_external_data=False).graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL}
    assert expected and set(external_tensors(saved)) == expected


@pytest.mark.parametrize("garbage", [b"\x0a\xff\xff\xff\xff\x0f", b"\x0f", b"\x08\x80"])
def test_bytes_that_are_not_protobuf_are_left_to_onnxruntime(garbage):
    with pytest.raises(Malformed):
        external_tensors(garbage)
    check_self_contained(garbage)  # no verdict: onnxruntime says why it cannot load them
