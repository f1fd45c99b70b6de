"""eLiveRec's disentangled encoder of one domain: consistent and specific intentions.

Reference: eLiveRec (Taobao Live, ICDE 2023), section IV.B.2, Eqs. 5-7 and Fig. 4. The encoder
is applied once per domain (live rooms ``V``, products ``S``); its two outputs feed the
distance-correlation penalty of Eq. 8 (:func:`liverank.models.layers.dcor.distance_correlation`,
``z_c`` against ``z_s`` of a domain) and the InfoNCE of Eq. 9
(:func:`liverank.models.layers.contrastive.info_nce`, ``z_c`` of one domain against ``z_c`` of
the other, cosine similarity, tau = 0.5).

For a history with encoder outputs ``h_i`` (``H``), item embeddings ``e_i`` (``E``) and a target
room embedding ``e_t``:

* Prototypes. ``o_c`` = masked mean pooling of ``E`` and ``o_s`` = masked max pooling of ``E``
  (per user). ``prototypes="learnable"`` replaces them by two learned vectors initialised
  ``N(0, 1/d)``, the paper's ablation 'wo.P' (Table III).
* Eq. 5, intention weighting. ``p(z_c|v_i) = softmax_{o in (o_c, o_s)}(sum_k (h_i * o)_k)``: the
  paper writes the element-wise product ``h_i (.) o``; a softmax needs a scalar logit, so we
  reduce it by a sum, i.e. the dot product ``h_i . o``. ``p(z_s|v_i) = 1 - p(z_c|v_i)``.
* Eq. 6, retrieval. We read ``z_{c,v_i} = p(z_c|v_i) h_i`` (the consistent component of item
  ``i``: its hidden state scaled by how consistent it is), the key and value of a target
  attention with query ``e_t``: ``p(c, v_i) = softmax_i(e_t . z_{c,v_i})`` over the valid
  positions.
* Eq. 7. ``z_c = sum_i p(c, v_i) p(z_c|v_i) h_i`` (= ``sum_i p(c, v_i) z_{c,v_i}``); ``z_s`` the
  same with ``s``.

Scale (our choice): with ``scaled=True`` (default) both logits are divided by ``sqrt(d)``. Eq. 6
is "similar to eq. 4", the Transformer attention, which has this factor. Eq. 5 has none in the
paper, but an unscaled dot product of two d-vectors has a spread of ``~sqrt(d)`` and saturates a
two-way softmax at d = 128 (hard 0/1 weights, vanishing gradients); ``scaled=False`` is the
literal paper form.

Padding positions are zeroed before any use, so their values cannot leak; an empty history (mask
all False) gives ``z_c = z_s = 0`` with finite gradients.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import nn

from liverank.errors import ConfigError


class Disentangled(NamedTuple):
    """Output of :class:`DisentangledEncoder`; the first two fields are the representations."""

    z_c: torch.Tensor  # [B, d] consistent intention
    z_s: torch.Tensor  # [B, d] specific intention
    p_consistent: torch.Tensor  # [B, L] p(z_c|v_i) (Eq. 5), 0 at padding
    retrieval_c: torch.Tensor  # [B, L] p(c, v_i) (Eq. 6), 0 at padding, rows sum to 1 or 0
    retrieval_s: torch.Tensor  # [B, L] p(s, v_i)
    mask: torch.Tensor  # [B, L] bool, the valid positions

    def consistent_share(self) -> torch.Tensor:
        """Mean ``p(z_c|v_i)`` over all valid positions of the batch (scalar; 0 if none)."""
        n = self.mask.sum().clamp_min(1)
        return self.p_consistent.sum() / n


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [B, L, d]`` over valid positions of ``mask [B, L]`` -> ``[B, d]`` (0 if none)."""
    m = mask.unsqueeze(-1)  # [B, L, 1]
    total = x.masked_fill(~m, 0.0).sum(1)  # [B, d]
    return total / m.sum(1).clamp_min(1).to(x.dtype)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Element-wise max of ``x [B, L, d]`` over valid positions -> ``[B, d]``; 0 if none."""
    m = mask.unsqueeze(-1)  # [B, L, 1]
    best = x.masked_fill(~m, torch.finfo(x.dtype).min).amax(1)  # [B, d]
    return torch.where(m.any(1), best, torch.zeros_like(best))


def _masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax of ``logits [B, L]`` over valid positions; padding and empty rows get 0."""
    filled = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)  # finite: no NaN rows
    return torch.softmax(filled, dim=-1) * mask.to(logits.dtype)  # [B, L]


class DisentangledEncoder(nn.Module):
    """Split a behaviour sequence into consistent and specific intentions (eLiveRec Eqs. 5-7).

    Args:
        dim: the embedding width ``d`` (of ``h``, ``e`` and the target).
        prototypes: ``"pooled"`` (mean / max pooling of the item embeddings, the paper) or
            ``"learnable"`` (two learned vectors, the 'wo.P' ablation).
        scaled: divide the Eq. 5 and Eq. 6 logits by ``sqrt(d)`` (see the module docstring).

    Example:
        >>> enc = DisentangledEncoder(8)
        >>> h, e = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
        >>> out = enc(h, e, torch.ones(2, 5, dtype=torch.bool), torch.randn(2, 8))
        >>> out.z_c.shape, out.z_s.shape
        (torch.Size([2, 8]), torch.Size([2, 8]))
    """

    def __init__(
        self,
        dim: int,
        prototypes: Literal["pooled", "learnable"] = "pooled",
        *,
        scaled: bool = True,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ConfigError(f"DisentangledEncoder needs dim >= 1, got {dim}")
        if prototypes not in ("pooled", "learnable"):
            raise ConfigError(f"prototypes must be 'pooled' or 'learnable', got '{prototypes}'")
        self.dim, self.prototypes = dim, prototypes
        self.scale = 1.0 / math.sqrt(dim) if scaled else 1.0
        self.learned: nn.Parameter | None = None
        if prototypes == "learnable":
            # Rows: o_c, o_s; N(0, 1/d) as in the prototype baselines the paper cites.
            self.learned = nn.Parameter(torch.randn(2, dim) / math.sqrt(dim))

    def prototype_vectors(
        self, e: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(o_c, o_s)``, each ``[B, d]``: pooled from ``e [B, L, d]`` or the learned pair."""
        if self.learned is None:
            return masked_mean(e, mask), masked_max(e, mask)
        b = e.shape[0]
        return self.learned[0].expand(b, -1), self.learned[1].expand(b, -1)

    def forward(
        self,
        h: torch.Tensor,
        e: torch.Tensor,
        mask: torch.Tensor,
        target: torch.Tensor,
        rows: torch.Tensor | None = None,
    ) -> Disentangled:
        """``h, e [B, L, d]``, ``mask [B, L]`` bool, ``target [B, d]`` -> :class:`Disentangled`.

        With ``rows [B]``, ``h``, ``e`` and ``mask`` hold only the distinct sequences
        (``[U, L, ...]``) and batch row ``i`` reads sequence ``rows[i]``: the prototypes and the
        Eq. 5 intentions, which do not read the target, are computed once per sequence (the rows
        of one request share theirs); the outputs are per batch row, equal to the call on the
        expanded tensors.
        """
        n = h.shape[0] if rows is None else rows.shape[0]
        if h.shape != e.shape or h.dim() != 3 or h.shape[-1] != self.dim:
            raise ConfigError(
                f"h and e must both be [B, L, {self.dim}], "
                f"got {tuple(h.shape)} and {tuple(e.shape)}"
            )
        if mask.shape != h.shape[:2] or target.shape != (n, self.dim):
            raise ConfigError(
                f"mask must be [B, L] = {tuple(h.shape[:2])} and target [B, {self.dim}], got "
                f"{tuple(mask.shape)} and {tuple(target.shape)}"
            )
        mask = mask.bool()
        m = mask.unsqueeze(-1)  # [U, L, 1]
        h = h.masked_fill(~m, 0.0)  # padding cannot leak, even if it holds inf / NaN
        e = e.masked_fill(~m, 0.0)
        o_c, o_s = self.prototype_vectors(e, mask)  # [U, d] each
        protos = torch.stack([o_c, o_s], dim=1)  # [U, 2, d]
        # Eq. 5: sum_k (h_i * o)_k for both prototypes, softmax over the two.
        intent_logits = torch.einsum("bld,bpd->blp", h, protos) * self.scale  # [U, L, 2]
        intent = torch.softmax(intent_logits, dim=-1) * m.to(h.dtype)  # [U, L, 2]
        if rows is not None:  # the target-dependent part is per batch row
            h, intent, mask = (x.index_select(0, rows) for x in (h, intent, mask))  # [B, ...]
        p_c, p_s = intent.unbind(-1)  # [B, L] each
        # Eq. 6: target attention with key = value = z_{., v_i} = p(z_.|v_i) h_i.
        t_dot_h = torch.einsum("bld,bd->bl", h, target) * self.scale  # [B, L]
        att_c = _masked_softmax(p_c * t_dot_h, mask)  # [B, L]
        att_s = _masked_softmax(p_s * t_dot_h, mask)  # [B, L]
        # Eq. 7: z = sum_i p(., v_i) p(z_.|v_i) h_i.
        z_c = torch.einsum("bl,bld->bd", att_c * p_c, h)  # [B, d]
        z_s = torch.einsum("bl,bld->bd", att_s * p_s, h)  # [B, d]
        return Disentangled(z_c, z_s, p_c, att_c, att_s, mask)
