"""encode(): orjson where installed, json.dumps otherwise; the same values either way, and NaN or
inf refused wherever it sits (orjson alone would write them as null)."""
import json
import math

import numpy as np
import pytest

import streams.messages as messages
from streams import SchemaError, decode, encode, make_message


def _track(i=1, **kw):
    t = {"id": i, "xyz": [0.1, -2.5e-05, 3.0], "vel": [0.0, 1e16, -0.0], "cov": [[1e-4, 0, 0], [0, 1e-4, 0], [0, 0, 1e-3]],
         "persistence": 0.9, "age_s": 1.0, "state": "tracked", "cam0": {"track": 4, "uv": [100.0, 50.25]}, "cam1": None}
    t.update(kw)
    return t


MESSAGES = [
    make_message(3, 7, 0.25, [_track(1), _track(2, cam0=None, cam1={"track": 9, "uv": [1.5, 2.0]})]),
    make_message(4, 8, 0.5, [_track(3, **{"class": "personne âgée"})], latency_ms=12.5),
    make_message(5, 9, 0.75, []),
    make_message(6, 10, 1.0, [_track(4, **{"class": "null"})]),  # the text null: json's turn, same values
]


@pytest.mark.parametrize("with_orjson", [True, False])
def test_encoded_messages_decode_to_the_same_values_with_and_without_orjson(monkeypatch, with_orjson):
    if with_orjson:
        pytest.importorskip("orjson")
    else:
        monkeypatch.setattr(messages, "orjson", None)
    for m in MESSAGES:
        payload = encode(m)
        assert json.loads(payload) == m and decode(payload) == m
    if not with_orjson:
        assert encode(MESSAGES[0]) == json.dumps(MESSAGES[0], separators=(",", ":")).encode()


@pytest.mark.parametrize("with_orjson", [True, False])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_is_refused_wherever_it_sits(monkeypatch, with_orjson, bad):
    if with_orjson:
        pytest.importorskip("orjson")
    else:
        monkeypatch.setattr(messages, "orjson", None)
    cases = [make_message(0, 0, bad, []), make_message(0, 0, 0.0, [], latency_ms=bad),
             make_message(0, 0, 0.0, [_track(xyz=[0.0, bad, 1.0])]),
             make_message(0, 0, 0.0, [_track(cov=[[1, 0, 0], [0, 1, 0], [0, 0, bad]])]),
             make_message(0, 0, 0.0, [_track(persistence=bad)]),
             make_message(0, 0, 0.0, [_track(cam0={"track": 1, "uv": [bad, 2.0]})])]
    for m in cases:
        with pytest.raises(SchemaError, match="cannot encode"):
            encode(m)


def test_types_orjson_refuses_go_through_json():
    m = make_message(1, 2, 3.0, [_track(5, persistence=np.float64(0.5), id=2 ** 70)])
    assert json.loads(encode(m)) == json.loads(json.dumps(m))
