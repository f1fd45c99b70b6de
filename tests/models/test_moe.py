"""MMoE, CGC, PLE: shapes, gates summing to 1, batched experts equal to a per-expert loop."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.errors import ConfigError
from liverank.models.backbones import (
    MLPBackboneConfig,
    MMoEBackboneConfig,
    PLEBackboneConfig,
    build_backbone,
)
from liverank.models.layers.moe import CGC, PLE, ExpertGroup, MMoE


def _expert(group: ExpertGroup, e: int, x: torch.Tensor) -> torch.Tensor:
    h = x
    for w, b in zip(group.weights, group.biases, strict=True):
        h = group.act(h @ w[e] + b[e, 0])
    return h


def test_expert_group_equals_a_loop_over_experts() -> None:
    torch.manual_seed(0)
    group = ExpertGroup(3, 5, [7, 4])
    x = torch.randn(6, 5)
    out = group(x)  # [B, E, H]
    assert out.shape == (6, 3, 4)
    for e in range(3):
        torch.testing.assert_close(out[:, e], _expert(group, e, x))
    per_expert = torch.randn(6, 3, 5)
    out = group(per_expert)
    for e in range(3):
        torch.testing.assert_close(out[:, e], _expert(group, e, per_expert[:, e]))


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 9),
    tasks=st.integers(1, 4),
    experts=st.integers(1, 5),
)
def test_mmoe_shapes_and_gates(batch: int, tasks: int, experts: int) -> None:
    moe = MMoE(6, tasks, experts, [8, 3])
    outputs, gates = moe(torch.randn(batch, 6))
    assert len(outputs) == len(gates) == tasks
    for out, gate in zip(outputs, gates, strict=True):
        assert out.shape == (batch, 3) and gate.shape == (batch, experts)
        torch.testing.assert_close(gate.sum(-1), torch.ones(batch))
        assert (gate >= 0).all()


def test_mmoe_output_is_the_gate_weighted_expert_mix() -> None:
    torch.manual_seed(0)
    moe = MMoE(4, 2, 3, [5])
    x = torch.randn(7, 4)
    outputs, gates = moe(x)
    experts = moe.experts(x)  # [B, E, H]
    for out, gate in zip(outputs, gates, strict=True):
        torch.testing.assert_close(out, (gate.unsqueeze(-1) * experts).sum(1))


@settings(max_examples=20, deadline=None)
@given(
    tasks=st.integers(1, 4),
    specific=st.integers(0, 2),
    shared=st.integers(0, 2),
    levels=st.integers(1, 3),
)
def test_ple_shapes_and_gates(tasks: int, specific: int, shared: int, levels: int) -> None:
    if specific + shared == 0:
        with pytest.raises(ConfigError):
            PLE(6, tasks, levels, specific, shared, [4])
        return
    ple = PLE(6, tasks, levels, specific, shared, [8, 4])
    outputs, gates = ple(torch.randn(5, 6))
    assert len(outputs) == len(gates) == tasks
    for out, gate in zip(outputs, gates, strict=True):
        assert out.shape == (5, 4) and gate.shape == (5, specific + shared)
        torch.testing.assert_close(gate.sum(-1), torch.ones(5))
    shared_gates = [lvl.shared_gate is not None for lvl in ple.levels]
    assert shared_gates == [True] * (levels - 1) + [False]


def test_cgc_routes_task_inputs_to_their_own_experts() -> None:
    """At level >= 2, task t's experts read task t's input and shared experts the shared one."""
    torch.manual_seed(0)
    cgc = CGC(4, n_tasks=2, n_specific=1, n_shared=1, expert_hidden=[3], shared_gate=True)
    inputs = [torch.randn(5, 4) for _ in range(3)]  # task 0, task 1, shared
    outputs, gates = cgc(inputs)
    e0 = _expert(cgc.experts, 0, inputs[0])
    e1 = _expert(cgc.experts, 1, inputs[1])
    es = _expert(cgc.experts, 2, inputs[2])
    expected0 = gates[0][:, :1] * e0 + gates[0][:, 1:] * es
    torch.testing.assert_close(outputs[0], expected0)
    expected_shared = gates[2][:, :1] * e0 + gates[2][:, 1:2] * e1 + gates[2][:, 2:] * es
    torch.testing.assert_close(outputs[2], expected_shared)


@pytest.mark.parametrize(
    "cfg",
    [
        MLPBackboneConfig(hidden=[8]),
        MMoEBackboneConfig(n_experts=3, expert_hidden=[8]),
        PLEBackboneConfig(expert_hidden=[8]),
    ],
)
def test_backbones_give_one_representation_per_task(cfg) -> None:  # type: ignore[no-untyped-def]
    tasks = ["ctr", "evtr", "gtr"]
    backbone = build_backbone(cfg, 10, tasks)
    outs, diag = backbone(torch.randn(4, 10))
    assert len(outs) == 3 and all(o.shape == (4, backbone.out_dim) for o in outs)
    if cfg.type != "mlp":
        assert set(diag) == {f"gate/{t}" for t in tasks}
        for g in diag.values():
            torch.testing.assert_close(g.sum(), torch.tensor(1.0))
