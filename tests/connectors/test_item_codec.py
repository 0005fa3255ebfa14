"""One codec for training and /predict: images as uint8, vectors as float32, the same bytes either way."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from connectors.item_codec import KINDS, ItemCodec, ItemKind, pick_image_format
from connectors.task_data import DataFetcher, TaskDataError


def _png(arr: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def test_images_are_stored_as_uint8_without_loss() -> None:
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    uri = "data:image/png;base64," + base64.b64encode(_png(arr)).decode()
    item = ItemCodec("image", "L", 8).load(DataFetcher("http://127.0.0.1:1", "k"), uri)
    assert item.dtype == np.uint8 and item.shape == (1, 8, 8)
    np.testing.assert_array_equal(item[0], arr)


def test_vectors_stay_float32() -> None:
    codec = ItemCodec("vector")
    item = codec.load(DataFetcher("http://127.0.0.1:1", "k"), [0.5, -1.25, 3.0])
    assert codec.dtype == np.float32 and item.dtype == np.float32
    np.testing.assert_array_equal(item, [0.5, -1.25, 3.0])


def test_one_image_decides_grey_or_colour() -> None:
    grey = np.full((10, 12), 100, np.uint8)
    colour = np.zeros((10, 12, 3), np.uint8)
    colour[..., 0] = 255
    assert pick_image_format(_png(grey), None) == ("L", 12)
    assert pick_image_format(_png(colour, "RGB"), 28) == ("RGB", 28)


def _jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_a_colour_photo_after_grey_ones_makes_the_project_colour() -> None:
    rng = np.random.default_rng(0)
    grey_photo = np.repeat(rng.integers(0, 255, (480, 640, 1), dtype=np.uint8), 3, axis=2)
    colour_photo = rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)
    greys = [_jpeg(grey_photo)] * 3
    assert pick_image_format(greys, None) == ("L", 128), "a grey JPEG (chroma noise and all) is grey; side capped"
    assert pick_image_format([*greys, _jpeg(colour_photo)], None)[0] == "RGB"
    assert pick_image_format([_png(np.full((20, 30), 9, np.uint8))], None) == ("L", 30), "the largest side"


def test_the_format_sample_refuses_an_image_over_the_pixel_limit_before_decoding_it() -> None:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    side = 8000  # 64 MP, over the limit; the file is a header of 70 bytes
    header = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")
    with pytest.raises(TaskDataError, match="pixel limit"):
        pick_image_format(header, None)


def test_each_kind_reads_its_own_data_and_an_unknown_kind_is_named() -> None:
    f = DataFetcher("http://127.0.0.1:1", None)
    assert ItemCodec("vector").load(f, "[1, 2, 3]").shape == (3,)
    with pytest.raises(TaskDataError, match="unknown data kind 'audio'"):
        ItemCodec("audio").load(f, "x")
    with pytest.raises(TaskDataError, match="image data must be"):
        ItemCodec("image").load(f, None)
    with pytest.raises(TaskDataError, match="cloud-storage"):
        ItemCodec("image").load(f, "s3://bucket/a.png")


class _Waveform(ItemKind):
    """A kind a newcomer might add: numbers read from an <Audio> tag's value."""

    name, tags, dtype = "waveform", frozenset({"audio"}), np.dtype(np.float32)

    def read(self, fetcher, value, form, task_id):
        return np.asarray(value, dtype=np.float32)


def test_a_new_kind_is_one_class_the_label_config_and_the_codec_both_find(monkeypatch) -> None:
    from connectors.label_config import LabelConfigError, parse_label_config

    xml = ('<View><Audio name="a" value="$wave"/><Choices name="c" toName="a">'
           '<Choice value="x"/><Choice value="y"/></Choices></View>')
    with pytest.raises(LabelConfigError, match="not supported"):
        parse_label_config(xml)
    monkeypatch.setitem(KINDS, "waveform", _Waveform())
    config = parse_label_config(xml)
    assert (config.kind, config.data_key) == ("waveform", "wave")
    item = ItemCodec(config.kind).load(DataFetcher("http://127.0.0.1:1", None), [0.5, -0.5])
    assert item.dtype == np.float32 and item.tolist() == [0.5, -0.5]
