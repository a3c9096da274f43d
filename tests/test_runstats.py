"""The loop's run statistics stay bounded over long runs and their quantiles stay accurate."""
import numpy as np

from tracker3d.pipeline import RunStats, StreamingQuantiles


def test_run_stats_memory_does_not_grow_with_pairs():
    st = RunStats()
    size = sum(q.counts.nbytes for q in st.timings.values())
    rng = np.random.default_rng(0)
    for v in rng.lognormal(1.0, 1.0, 108_000):  # an hour at 30 fps
        for q in st.timings.values():
            q.add(float(v))
    assert all(len(q) == 108_000 for q in st.timings.values())
    assert sum(q.counts.nbytes for q in st.timings.values()) == size
    assert not any(isinstance(getattr(q, name), list) for q in st.timings.values() for name in vars(q))


def test_streaming_quantiles_match_exact_ones():
    rng = np.random.default_rng(1)
    for data in (rng.lognormal(0.5, 1.2, 50_000), rng.uniform(0.01, 40.0, 20_000), np.full(100, 3.0),
                 np.concatenate([rng.normal(5, 0.5, 9_900), rng.uniform(200, 400, 100)])):
        q = StreamingQuantiles()
        for v in data:
            q.add(float(v))
        for p in (0.5, 0.99):
            exact = float(np.percentile(data, 100 * p, method="lower"))
            assert abs(q.quantile(p) - exact) <= 0.01 * exact + 1e-9, (p, q.quantile(p), exact)
    assert np.isnan(StreamingQuantiles().quantile(0.5))
