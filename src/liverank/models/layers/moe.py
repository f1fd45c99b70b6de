"""Mixture-of-experts layers for multi-task learning: MMoE, CGC and PLE.

References:
    * J. Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
      Mixture-of-Experts" (MMoE), KDD 2018: shared experts, one softmax gate per task.
    * H. Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL)
      Model for Personalized Recommendations", RecSys 2020: a Customized Gate Control (CGC)
      level has task-specific experts and shared experts; task ``t``'s gate mixes its own and the
      shared experts. PLE stacks CGC levels; every level but the last also has a shared gate
      over all experts, whose output feeds the next level's shared experts.

Experts of a level are computed together (:class:`ExpertGroup`: weights ``[E, in, out]`` and one
batched matmul per layer) rather than one small ``nn.Linear`` call per expert.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from liverank.errors import ConfigError
from liverank.models.layers.mlp import make_activation


class ExpertGroup(nn.Module):
    """``E`` independent MLP experts evaluated in one batched matmul per layer.

    Input ``[B, in_dim]`` (every expert sees the same input) or ``[B, E, in_dim]`` (expert
    ``e`` sees row ``e``); output ``[B, E, hidden[-1]]``.
    """

    def __init__(
        self,
        n_experts: int,
        in_dim: int,
        hidden: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if n_experts < 1 or not hidden:
            raise ConfigError(f"need >= 1 expert and >= 1 hidden size, got {n_experts}, {hidden}")
        self.n_experts = n_experts
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        width = in_dim
        for h in hidden:
            bound = 1 / math.sqrt(width)
            self.weights.append(
                nn.Parameter(torch.empty(n_experts, width, h).uniform_(-bound, bound))
            )
            self.biases.append(nn.Parameter(torch.empty(n_experts, 1, h).uniform_(-bound, bound)))
            width = h
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(zip(self.weights, self.biases, strict=True))
        if x.dim() == 2:
            # Every expert reads the same input: the first layer is one [B, in] x [in, E*h]
            # GEMM (expanding x to [E, B, in] for a batched matmul costs a reduction over E in
            # the backward pass, and E small GEMMs run slower than one wide one on a CPU).
            w, b = layers[0]
            n_exp, width, h = w.shape
            flat = torch.addmm(b.reshape(n_exp * h), x, w.transpose(0, 1).reshape(width, n_exp * h))
            out = self.dropout(self.act(flat)).view(x.shape[0], n_exp, h)  # [B, E, h]
            if len(layers) == 1:
                return out
            hid = out.transpose(0, 1)  # [E, B, h]
            layers = layers[1:]
        else:
            hid = x.transpose(0, 1)  # [E, B, in]
        for w, b in layers:
            hid = self.dropout(self.act(torch.baddbmm(b, hid, w)))  # [E, B, h]
        return hid.transpose(0, 1)  # [B, E, out]


def _mix(gate_logits: torch.Tensor, experts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax gate ``[B, E]`` over experts ``[B, E, H]`` -> (``[B, H]``, gate weights)."""
    gate = torch.softmax(gate_logits, dim=-1)  # [B, E]
    # Elementwise product + sum: faster on CPU than a bmm over B tiny [1, E] x [E, H] products.
    return (gate.unsqueeze(-1) * experts).sum(1), gate


class MMoE(nn.Module):
    """Multi-gate mixture of experts: ``[B, in_dim]`` -> one ``[B, H]`` per task.

    ``forward`` returns ``(outputs, gates)``, ``gates[t]`` being task t's ``[B, n_experts]``
    softmax weights (each row sums to 1).
    """

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        n_experts: int = 4,
        expert_hidden: Sequence[int] = (128, 64),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.experts = ExpertGroup(n_experts, in_dim, expert_hidden, activation, dropout)
        self.gates = nn.Linear(in_dim, n_tasks * n_experts)  # all task gates in one matmul
        self.n_tasks, self.n_experts = n_tasks, n_experts
        self.out_dim = self.experts.out_dim

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        experts = self.experts(x)  # [B, E, H]
        logits = self.gates(x).view(x.shape[0], self.n_tasks, self.n_experts)  # [B, T, E]
        gates = torch.softmax(logits, dim=-1)  # [B, T, E]
        mixed = torch.bmm(gates, experts)  # [B, T, H]
        return list(mixed.unbind(1)), list(gates.unbind(1))


class CGC(nn.Module):
    """One Customized Gate Control level of PLE.

    Input: ``[B, in_dim]`` (first level: every expert sees the same vector) or a list of
    ``n_tasks + 1`` tensors ``[B, in_dim]`` (task inputs, then the shared input). Output: a list
    of ``n_tasks`` task tensors ``[B, H]``, plus the shared tensor when ``shared_gate`` is on
    (every level but the last), and the gate weights of each task (and of the shared gate).

    Experts are ordered ``[task 0 specific..., task 1 specific..., ..., shared...]``.
    """

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        n_specific: int = 1,
        n_shared: int = 2,
        expert_hidden: Sequence[int] = (64,),
        activation: str = "relu",
        dropout: float = 0.0,
        shared_gate: bool = False,
    ) -> None:
        super().__init__()
        if n_specific < 0 or n_shared < 0 or n_specific + n_shared < 1:
            raise ConfigError(
                f"CGC needs experts; got n_specific={n_specific}, n_shared={n_shared}"
            )
        self.n_tasks, self.n_specific, self.n_shared = n_tasks, n_specific, n_shared
        n_experts = n_tasks * n_specific + n_shared
        self.experts = ExpertGroup(n_experts, in_dim, expert_hidden, activation, dropout)
        self.task_gates = nn.ModuleList(
            nn.Linear(in_dim, n_specific + n_shared) for _ in range(n_tasks)
        )
        self.shared_gate = nn.Linear(in_dim, n_experts) if shared_gate else None
        # Which input row (task t, or the shared input = n_tasks) feeds each expert.
        source = [t for t in range(n_tasks) for _ in range(n_specific)] + [n_tasks] * n_shared
        self.register_buffer("_source", torch.tensor(source), persistent=False)
        # Experts each task's gate mixes: its own, then the shared ones ([T, s + S]).
        shared_ids = list(range(n_tasks * n_specific, n_experts))
        mixed = [
            list(range(t * n_specific, (t + 1) * n_specific)) + shared_ids for t in range(n_tasks)
        ]
        self.register_buffer("_mixed", torch.tensor(mixed).reshape(-1), persistent=False)
        self.out_dim = self.experts.out_dim

    def _task_gate_logits(self, inputs: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """``[B, T, s + S]`` logits of every task gate, in one matmul."""
        w = torch.stack([g.weight for g in self.task_gates])  # [T, s + S, in]
        b = torch.stack([g.bias for g in self.task_gates])  # [T, s + S]
        if isinstance(inputs, torch.Tensor):  # one input for every gate
            logits = inputs @ w.reshape(-1, w.shape[-1]).t()  # [B, T * (s + S)]
            return logits.view(inputs.shape[0], self.n_tasks, -1) + b
        x = torch.stack(inputs[: self.n_tasks], dim=1)  # [B, T, in]
        return torch.einsum("bti,tgi->btg", x, w) + b

    def forward(
        self, inputs: torch.Tensor | list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if isinstance(inputs, torch.Tensor):
            shared_in = inputs
            experts = self.experts(inputs)  # [B, E, H]
        else:
            shared_in = inputs[self.n_tasks]
            stacked = torch.stack(inputs, dim=1)  # [B, T+1, in]
            experts = self.experts(stacked.index_select(1, self._source))  # [B, E, H]
        n = experts.shape[0]
        chosen = experts.index_select(1, self._mixed).view(n, self.n_tasks, -1, experts.shape[-1])
        gate = torch.softmax(self._task_gate_logits(inputs), dim=-1)  # [B, T, s + S]
        # Elementwise product + sum: faster on CPU than B x T tiny matmuls.
        mixed = (gate.unsqueeze(-1) * chosen).sum(2)  # [B, T, H]
        outputs, gates = list(mixed.unbind(1)), list(gate.unbind(1))
        if self.shared_gate is not None:
            out, g = _mix(self.shared_gate(shared_in), experts)
            outputs.append(out)
            gates.append(g)
        return outputs, gates


class PLE(nn.Module):
    """Progressive Layered Extraction: ``levels`` stacked CGC levels.

    ``[B, in_dim]`` -> ``(outputs, gates)``: one ``[B, H]`` per task from the last level, and the
    gate weights of the last level's task gates (``[B, n_specific + n_shared]`` each).
    """

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        levels: int = 2,
        n_specific: int = 1,
        n_shared: int = 2,
        expert_hidden: Sequence[int] = (64,),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if levels < 1:
            raise ConfigError(f"PLE needs at least one level, got {levels}")
        self.levels = nn.ModuleList()
        width = in_dim
        for i in range(levels):
            level = CGC(
                width,
                n_tasks,
                n_specific,
                n_shared,
                expert_hidden,
                activation,
                dropout,
                shared_gate=i < levels - 1,
            )
            self.levels.append(level)
            width = level.out_dim
        self.n_tasks = n_tasks
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        state: torch.Tensor | list[torch.Tensor] = x
        gates: list[torch.Tensor] = []
        for level in self.levels:
            state, gates = level(state)
        assert isinstance(state, list)
        return state[: self.n_tasks], gates[: self.n_tasks]
