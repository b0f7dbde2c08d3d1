"""Optional int8 quantisation (static, QDQ, calibrated on real face crops) of an exported classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from export.onnx_export import normalise


class _Batches(CalibrationDataReader):
    def __init__(self, images_u8: np.ndarray, batch: int = 32) -> None:
        self._batches = iter([normalise(images_u8[i:i + batch]) for i in range(0, len(images_u8), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._batches, None)
        return None if x is None else {"images": x}


def quantize_int8(fp32_path: Path, out: Path, calibration_u8: np.ndarray) -> Path:
    """Write an int8 QDQ copy of ``fp32_path`` calibrated on ``calibration_u8``; metadata is kept."""
    out = Path(out)
    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), _Batches(calibration_u8), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    pre.unlink()
    proto, source = onnx.load(str(out)), onnx.load(str(fp32_path), load_external_data=False)
    del proto.metadata_props[:]
    for entry in source.metadata_props:
        proto.metadata_props.add(key=entry.key, value=entry.value)
    proto.metadata_props.add(key="quantization", value="int8 static QDQ, per-channel weights")
    onnx.save(proto, str(out))
    return out
