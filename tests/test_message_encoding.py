"""encode(): orjson where installed, json.dumps otherwise; the same values either way, and NaN or
inf refused wherever it sits (orjson alone would write them as null)."""
import json
import math

import numpy as np
import pytest

import streams.messages as messages
from streams import SchemaError, decode, encode, make_message


def _track(i=1, **kw):
    t = {"id": i, "xyz": [0.1, -2.5e-05, 3.0], "vel": [0.0, 1e16, -0.0],
         "cov": [[1e-4, 0, 0], [0, 1e-4, 0], [0, 0, 1e-3]], "persistence": 0.9, "age_s": 1.0, "state": "tracked", "cam0": {"track": 4, "uv": [100.0, 50.25]}, "cam1": None}
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


@pytest.mark.parametrize("digits", [1, 3, 6, 9, 12])
def test_significant_is_float_of_the_g_format_bit_for_bit(digits):
    """significant() (the covariance's 6 digits on the wire) equals float(f"{v:.Ng}") for every
    value: random magnitudes over 600 decades, exact decimal ties, values next to ties and to
    powers of ten, zeros of both signs, subnormals, the largest doubles, NaN and inf."""
    rng = np.random.default_rng(digits)
    ties = (rng.integers(10 ** (digits - 1), 10 ** digits, 5000) + 0.5) * 10.0 ** rng.integers(-12, 6, 5000)
    edges = np.concatenate([10.0 ** np.arange(-30, 31), np.nextafter(10.0 ** np.arange(-30, 31), 0),
                            np.nextafter(10.0 ** np.arange(-30, 31), np.inf)])
    values = np.concatenate([
        rng.lognormal(0, 40, 20000) * rng.choice([-1, 1], 20000), rng.normal(0, 1e-3, 20000), ties,
        np.nextafter(ties, 0), np.nextafter(ties, np.inf), edges, -edges,
        [0.0, -0.0, 5e-324, -5e-324, 2.2e-308, 1.7976931348623157e308, math.nan, math.inf, -math.inf]])
    got = messages.significant(values, digits)
    want = [float(f"{v:.{digits}g}") for v in values.tolist()]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g == w and math.copysign(1, g) == math.copysign(1, w)) or (math.isnan(g) and math.isnan(w))
    assert messages.significant(np.zeros((0, 3, 3))) == []
    with pytest.raises(ValueError, match="digits"):
        messages.significant(values, 13)


@pytest.mark.parametrize("ndigits", [0, 2, 4, 5, 9])
def test_rounded_is_pythons_round_bit_for_bit(ndigits):
    """rounded() (the message's positions, velocities, pixels, scores and ages) equals round(v, N)
    for every value: random magnitudes, exact decimal ties and their neighbours, values too large
    for the batch path, zeros of both signs, tiny negatives (-0.0), NaN and inf."""
    rng = np.random.default_rng(ndigits)
    ties = (rng.integers(-10 ** 6, 10 ** 6, 5000) + 0.5) / 10.0 ** ndigits
    values = np.concatenate([
        rng.normal(0, 10, 20000), rng.lognormal(0, 8, 20000) * rng.choice([-1, 1], 20000), ties,
        np.nextafter(ties, 0), np.nextafter(ties, np.inf), -rng.uniform(0, 0.4, 100) / 10.0 ** ndigits,
        [0.0, -0.0, 5e-324, 2.0 ** 40, -(2.0 ** 60), 1.7976931348623157e308, math.nan, math.inf, -math.inf]])
    got = messages.rounded(values, ndigits)
    want = [round(v, ndigits) for v in values.tolist()]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g == w and math.copysign(1, g) == math.copysign(1, w)) or (math.isnan(g) and math.isnan(w))
    assert messages.rounded(np.zeros((0, 2)), 2) == []
    with pytest.raises(ValueError, match="ndigits"):
        messages.rounded(values, 23)
