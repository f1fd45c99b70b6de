"""The Cross GSUs over the history service equal the eager ``[B, K]`` batch fields exactly.

Reference: the eager path (``LongHistory.batch_fields``, checked against a brute-force
reference in ``tests/samples/test_long_history.py``). The lazy path builds the window positions
from ``long_<d>_start / _end`` in torch and reads only the rows the GSUs need
(``models/layers/history.py``); same samples, same parameters -> same outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.errors import ConfigError
from liverank.features import encoders as enc
from liverank.features import long_history as lh
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.layers.history import time_gap_bucket
from liverank.models.modules.moment_cross import SEQUENCES, MomentCross
from liverank.models.ranker import Ranker
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config

K = 24
B = 96
T0 = 10 * 86_400_000  # first sample time (ms)


@pytest.fixture(scope="module")
def fm():
    base = synthetic_feature_map(n_users=40, n_authors=60, n_categories=6, long_len=K)
    # the real encoder's age codes go up to TIME_GAP_VOCAB - 1
    return base.model_copy(update={"tables": {**base.tables, "time_gap": enc.TIME_GAP_VOCAB}})


def _store(fm, rng: np.random.Generator) -> lh.LongHistory:
    """Histories of users 1..39 of 0 to 3K rows (user 40 has none); coarse times force ties."""
    frames = {}
    for domain, cols in lh.DOMAIN_COLUMNS.items():
        sizes = rng.integers(0, 3 * K, 40)
        sizes[[0, 1]] = [0, 2 * K]  # user 1: empty; user 2: always more than K
        sizes[39] = 0
        user = np.repeat(np.arange(1, 41), sizes)
        # times in whole minutes (ties inside and across domains), some after the samples
        ts = rng.integers(0, 20 * 1440, len(user)) * 60_000 + T0 - 8 * 86_400_000
        top = {
            "author": fm.tables["author"],
            "category": fm.tables["category"],
            "tag": fm.tables["video_tag"],
            "action": fm.tables["live_action" if domain == "live" else "video_action"],
            "play": fm.tables["play_bucket"],
            "lv": 2,
        }
        data = {"user_id": user, "ts": ts} | {c: rng.integers(0, top[c], len(user)) for c in cols}
        frames[domain] = pl.DataFrame(data).sort(["user_id", "ts"], maintain_order=True)
    return lh.LongHistory.from_frames(frames)


@pytest.fixture(scope="module")
def pair(fm):
    """(eager batch, lazy batch, store) on the same samples."""
    rng = np.random.default_rng(5)
    store = _store(fm, rng)
    base = {
        k: v for k, v in synthetic_batches(fm, 1, B, seed=9)[0].items() if not k.startswith("long_")
    }
    user = base["user_id"].numpy() % 40 + 1
    base["user_id"] = torch.from_numpy(user)
    ts = T0 + rng.integers(0, 4 * 86_400_000, B)  # [B]
    arrays = {"ts": ts}
    for domain, table in store.tables.items():
        start, end = table.bounds(user, ts)
        arrays |= dict(zip(lh.index_columns(domain), (start, end), strict=True))
    lengths = arrays["long_video_end"] - arrays["long_video_start"]
    assert (lengths == 0).any() and (lengths > K).any() and ((lengths > 0) & (lengths < K)).any()
    lazy = base | {k: torch.from_numpy(v) for k, v in arrays.items()}
    fields = store.batch_fields(arrays, K)
    eager = lazy | {k: torch.from_numpy(v) for k, v in fields.items()}
    return eager, lazy, store


def _module(fm, store, **params) -> tuple[MomentCross, EmbeddingCollection]:
    torch.manual_seed(0)
    emb = EmbeddingCollection(fm, 16)
    module = MomentCross(fm, emb, **params)
    module.attach_long_history(store, K)
    return module, emb


CONFIGS = [
    {},
    *({"sequences": [s for s in SEQUENCES if s != drop]} for drop in SEQUENCES),
    {"sequences": ["mixed"]},
    {"gsu_len": 200},  # GSU wider than the window
    # the mean-pooling control reads every window position (issue #14)
    {"search": "mean", "sequences": ["short", "long", "livelong", "mixed"]},
    {"search": "mean", "sequences": ["mixed"], "contrastive_weight": 0.0},
]


@pytest.mark.parametrize("params", CONFIGS, ids=str)
def test_lazy_equals_eager(fm, pair, params) -> None:
    eager, lazy, store = pair
    module, emb = _module(fm, store, **({"gsu_len": 6} | params))
    module.train()
    want, got = module(eager, emb), module(lazy, emb)
    torch.testing.assert_close(got.representation, want.representation, rtol=1e-6, atol=1e-6)
    assert set(got.aux_losses) == set(want.aux_losses)
    for name, value in want.aux_losses.items():
        torch.testing.assert_close(got.aux_losses[name], value, rtol=1e-6, atol=1e-6)
    for name, value in want.diagnostics.items():
        assert float(got.diagnostics[name]) == float(value), name
    # gradients too: the same embedding rows and ESU weights are trained
    (want.representation.sum() + sum(want.aux_losses.values(), torch.tensor(0.0))).backward()
    grads = [p.grad.clone() if p.grad is not None else None for p in module.parameters()]
    module.zero_grad(set_to_none=True)
    (got.representation.sum() + sum(got.aux_losses.values(), torch.tensor(0.0))).backward()
    for g_want, p in zip(grads, module.parameters(), strict=True):
        if g_want is None:
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, g_want, rtol=1e-6, atol=1e-6)


def test_service_reads_equal_the_eager_fields(fm, pair) -> None:
    """Every window read (full window and selected positions) equals the eager field."""
    from liverank.models.layers.history import EagerWindow, ServiceWindow

    eager, lazy, store = pair
    for domain in store.tables:
        suffixes = [*lh.BATCH_FEATURES[domain].values(), "age"]
        e = EagerWindow(eager, domain, [*suffixes, "len", "dt"])
        s = ServiceWindow(lazy, domain, store.tensors()[domain], K)
        assert torch.equal(e.valid, s.valid)
        torch.testing.assert_close(s.dt(), e.dt(), rtol=0, atol=0)
        index = torch.randint(0, K, (B, 5))
        keep = torch.gather(e.valid, 1, index)
        for suffix in suffixes:
            if suffix != "age":
                assert torch.equal(s.full(suffix), e.full(suffix)), suffix
            got, want = s.at(suffix, index), e.at(suffix, index)
            assert got.dtype == torch.int64
            assert torch.equal(got[keep], want[keep]), suffix
    assert store.tensors() is store.tensors()  # views made once
    assert store.tensors()["video"].columns["author"].data_ptr() == (
        store.tables["video"].columns["author"].ctypes.data
    )


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(-5_000, 2**44), min_size=1, max_size=40))
def test_torch_time_gap_bucket_equals_the_encoder(gaps: list[int]) -> None:
    edges = [0, 1, 999, 1000, 1999, 2000, *(1000 * 2**j + d for j in range(26) for d in (-1, 0))]
    values = np.array(gaps + edges, dtype=np.int64)
    got = time_gap_bucket(torch.from_numpy(values)).numpy()
    np.testing.assert_array_equal(got, enc.time_gap_bucket(values))


def test_ranker_without_store_names_the_fix(fm, pair, tmp_path: Path) -> None:
    eager, lazy, store = pair
    cfg = get_config("moment_cross")
    cfg.modules[-1].params["gsu_len"] = 6
    torch.manual_seed(0)
    model = Ranker(fm, cfg)
    model.eval()
    with pytest.raises(ConfigError, match="attach_long_history"):
        model(lazy)
    assert model.attach_long_history(store, K) == 1
    with torch.no_grad():
        want = model.predict_proba(eager)
        got = model.predict_proba(lazy)
    for task in want:
        torch.testing.assert_close(got[task], want[task], rtol=1e-6, atol=1e-6)
    # the store is data, not parameters: not in the checkpoint, attach again after load
    path = tmp_path / "m.pt"
    model.save(path)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert sum(v.numel() for v in state.values()) == sum(
        v.numel() for v in model.state_dict().values()
    )
    assert not any("history" in k for k in state)
    loaded = Ranker.load(path)
    loaded.eval()
    with pytest.raises(ConfigError, match="attach_long_history"):
        loaded(lazy)
    loaded.attach_long_history(store, K)
    with torch.no_grad():
        again = loaded.predict_proba(lazy)
    for task in want:
        torch.testing.assert_close(again[task], want[task], rtol=1e-6, atol=1e-6)
    with pytest.raises(ConfigError, match="long_len >= 1"):
        model.attach_long_history(store, 0)


# ------------------------------------------------------------------ trimmed and deduplicated reads
#: fields that describe the candidate room (differ between the rows of one request)
CANDIDATE = ("author_id", "author_type", "author_fans", "room_category", "live_id")


def _requests(batch: dict, per_request: int, seed: int = 3) -> dict:
    """Rows of ``batch`` grouped as requests: every ``per_request`` consecutive rows share the
    user, time, histories and sequences of one row and keep their own candidate room."""
    n = len(batch["user_id"])
    owner = torch.arange(n) // per_request * per_request  # [B]: the request's first row
    out = {k: v.index_select(0, owner) for k, v in batch.items()}
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    for k in CANDIDATE:
        if k in batch:
            out[k] = batch[k].index_select(0, perm)
    return out


def _outputs_and_grads(module, emb, batch):
    module.zero_grad(set_to_none=True)
    out = module(batch, emb)
    (out.representation.sum() + sum(out.aux_losses.values(), torch.tensor(0.0))).backward()
    grads = [None if p.grad is None else p.grad.clone() for p in module.parameters()]
    return out, grads


def _assert_same(got, want, g_got, g_want) -> None:
    torch.testing.assert_close(got.representation, want.representation, rtol=1e-5, atol=1e-6)
    assert set(got.aux_losses) == set(want.aux_losses)
    for name, value in want.aux_losses.items():
        torch.testing.assert_close(got.aux_losses[name], value, rtol=1e-5, atol=1e-6)
    for name, value in want.diagnostics.items():
        torch.testing.assert_close(float(got.diagnostics[name]), float(value), rtol=1e-6, atol=0)
    for a, b in zip(g_got, g_want, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("params", CONFIGS, ids=str)
def test_request_batches_deduplicate_exactly(fm, pair, params) -> None:
    """On a batch of requests (rows sharing user, time and histories) the deduplicated module
    gives the eager reference's outputs, losses, diagnostics and gradients."""
    eager, lazy, store = pair
    eager_r, lazy_r = _requests(eager, 4), _requests(lazy, 4)
    module, emb = _module(fm, store, **({"gsu_len": 6} | params))
    module.train()
    distinct = module._distinct(lazy_r)
    assert distinct is not None and distinct.count == B // 4
    want, g_want = _outputs_and_grads(module, emb, eager_r)  # eager fields: never deduplicated
    got, g_got = _outputs_and_grads(module, emb, lazy_r)
    assert float(got.diagnostics["distinct_rows_frac"]) == 0.25
    _assert_same(got, want, g_got, g_want)
    module.cfg = module.cfg.model_copy(update={"dedup_rows": False})
    assert module._distinct(lazy_r) is None


def test_windows_are_trimmed_to_the_longest_row(fm, pair) -> None:
    """A batch whose windows all end before K reads them at that width, same outputs."""
    from liverank.models.layers.history import ExpandedWindow, ServiceWindow

    eager, lazy, store = pair
    short = (lazy["long_video_end"] - lazy["long_video_start"] < K // 2) & (
        lazy["long_live_end"] - lazy["long_live_start"] < K // 2
    )
    rows = short.nonzero().squeeze(1)
    assert len(rows) >= 8
    eager_s = {k: v.index_select(0, rows) for k, v in eager.items()}
    lazy_s = {k: v.index_select(0, rows) for k, v in lazy.items()}
    tensors = store.tensors()
    for domain in store.tables:
        full = ServiceWindow(lazy_s, domain, tensors[domain], K)
        trimmed = ServiceWindow(lazy_s, domain, tensors[domain], K, trim=True)
        assert full.width == K and trimmed.width < K // 2
        assert not full.valid[:, trimmed.width :].any()
        for suffix in ("author", "lv"):
            assert torch.equal(trimmed.full(suffix), full.full(suffix)[:, : trimmed.width])
        # the expanded view of distinct rows reads what a window of every row reads
        owner = torch.arange(len(rows)) // 2 * 2
        repeated = {k: v.index_select(0, owner) for k, v in lazy_s.items()}
        inverse = torch.arange(len(rows)) // 2
        firsts = {k: v.index_select(0, owner[::2]) for k, v in lazy_s.items()}
        expanded = ExpandedWindow(ServiceWindow(firsts, domain, tensors[domain], K), inverse)
        per_row = ServiceWindow(repeated, domain, tensors[domain], K)
        assert torch.equal(expanded.valid, per_row.valid)
        assert torch.equal(expanded.dt(), per_row.dt())
        index = torch.randint(0, K, (len(rows), 5))
        for suffix in [*lh.BATCH_FEATURES[domain].values(), "age"]:
            assert torch.equal(expanded.at(suffix, index), per_row.at(suffix, index)), suffix
    for params in CONFIGS:
        module, emb = _module(fm, store, **({"gsu_len": 6} | params))
        module.train()
        want, g_want = _outputs_and_grads(module, emb, eager_s)
        got, g_got = _outputs_and_grads(module, emb, lazy_s)
        _assert_same(got, want, g_got, g_want)


def test_one_request_looks_up_each_window_position_once(fm, pair, monkeypatch) -> None:
    """A request's rows share one window: its GSUs' item vectors come from one lookup per window
    position (``LongDomain.items`` on a one-row ``ExpandedWindow``, never its per-row ``at``),
    and give the outputs and gradients (module and embeddings, up to float summation order) of
    the per-row reads of the eager fields."""
    from liverank.models.layers.history import ExpandedWindow
    from liverank.models.synthetic import as_request

    def per_row_read(self, suffix, index):
        raise AssertionError("a one-row window was read per row")

    monkeypatch.setattr(ExpandedWindow, "at", per_row_read)

    eager, lazy, _store_ = pair
    lengths = lazy["long_video_end"] - lazy["long_video_start"]
    r = int(torch.nonzero(lengths > K // 2)[0])  # a user whose window is full
    order = torch.cat([torch.tensor([r]), torch.arange(B)])
    eager_r = as_request({k: v.index_select(0, order) for k, v in eager.items()})
    lazy_r = as_request({k: v.index_select(0, order) for k, v in lazy.items()})
    for params in CONFIGS:
        module, emb = _module(fm, _store_, **({"gsu_len": 6} | params))
        module.train()
        emb.zero_grad(set_to_none=True)
        want, g_want = _outputs_and_grads(module, emb, eager_r)
        e_want = [None if p.grad is None else p.grad.clone() for p in emb.parameters()]
        emb.zero_grad(set_to_none=True)
        got, g_got = _outputs_and_grads(module, emb, lazy_r)
        e_got = [None if p.grad is None else p.grad.clone() for p in emb.parameters()]
        assert float(got.diagnostics["distinct_rows_frac"]) == 1 / (B + 1)
        _assert_same(got, want, g_got, g_want)
        for a, b in zip(e_got, e_want, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a.to_dense(), b.to_dense(), rtol=1e-4, atol=1e-5)
