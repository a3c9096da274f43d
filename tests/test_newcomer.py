"""A newcomer's rough edges: plain-word summaries, honest latency, warnings and refusals that say why."""

from streams.pairing import PairStats
from tracker3d.cli import main
from tracker3d.commands.common import format_summary
from tracker3d.evaluation.eval3d import describe_false_kinds, format_3d
from tracker3d.pipeline import RunStats


def _summary():
    st = RunStats(pairs_in=10, processed=10, published=10, tracks_max=3, wall_s=1.0)
    src = PairStats(pairs=10, single0=2, overwritten=3)
    src.skews.extend([0.001, 0.002])
    return st.summary(src.as_dict())


def test_run_summary_is_in_plain_words():
    text = format_summary(_summary())
    for jargon in ("overwritten", "single0", "skew_ms_p99", "{", "}", "dropped0"):
        assert jargon not in text, jargon
    assert "3 pairs dropped because the loop was busy" in text
    assert "2 pairs with only camera 0" in text
    assert "camera time skew within a pair, ms: median" in text


def test_false_track_kinds_are_explained_not_a_dict():
    words = describe_false_kinds({"other": 2, "flash": 1})
    assert "{" not in words and "2 other (near no simulated thing" in words and "1 flash (" in words
    m = {"MOTA": 1.0, "IDF1": 1.0, "HOTA": 1.0, "IDSW": 0, "rmse_m": 0.01, "rmse_raw_m": 0.01, "rmse_smooth_m": 0.01,
         "bound_m": 0.01, "pixel_sigma": 0.3, "false_tracks": 2, "false_track_s": 1.0, "false_by_kind": {"other": 2},
         "time_to_track_s_median": 0.1, "time_to_track_s_p90": 0.1, "objects": 3, "objects_never_tracked": 0}
    line = format_3d("3D", m)
    assert "{'other'" not in line and "ghost" in line


def test_demo_shorter_than_the_warmup_says_it_scored_nothing(capsys):
    assert main(["demo", "--fast", "--seconds", "1", "--no-publish", "--gate", "hits"]) == 0
    out = capsys.readouterr().out
    assert "scored nothing: the run" in out and "2.0 s warm-up" in out
    assert "nan" not in out.lower().replace("nanos", "")


def test_demo_never_prints_a_bare_nan(capsys):
    # 2.2 s: a few frames after the warm-up, too few for a confirmed track
    assert main(["demo", "--fast", "--seconds", "2.2", "--no-publish", "--gate", "hits", "--min-hits", "9"]) == 0
    out = capsys.readouterr().out
    assert " nan" not in out and "none (" in out


def test_summary_with_no_tracks_says_why():
    st = RunStats(pairs_in=10, processed=10, published=10, tracks_max=0, wall_s=1.0)
    assert "no 3D track at all:" in format_summary(st.summary())
