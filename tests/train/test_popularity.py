import numpy as np

from liverank.train.popularity import PopularityBaseline


def test_smoothed_author_rates() -> None:
    cols = {
        "author_id": np.array([1, 1, 1, 1, 2, 2]),
        "ctr": np.array([1, 1, 1, 0, 0, 0], dtype=np.float32),
        "mask_ctr": np.array([1, 1, 1, 1, 1, 0], dtype=np.float32),
    }
    model = PopularityBaseline(["ctr"], smoothing=1.0).fit(cols)
    g = 3 / 5
    p = model.predict_proba({"author_id": np.array([1, 2, 99])})["ctr"]
    assert np.allclose(p, [(3 + g) / 5, (0 + g) / 2, g])  # unseen author -> global rate
