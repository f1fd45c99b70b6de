"""The interface every model part implements (ARCHITECTURE section 5).

A :data:`Batch` is a mapping of named tensors whose names are the sample columns of
:mod:`liverank.features.spec` (ids ``[B]`` int64, sequences ``[B, L]`` int64, labels and masks
``[B]`` float32). Paper modules add their own fields (statistic sequences, segment embeddings,
graph neighbours) under names they declare in ``required_fields``.

A :class:`FeatureModule` reads batch fields (and the shared embeddings) and returns a
:class:`ModuleOutput`: a representation ``[B, out_dim]``, auxiliary losses (already weighted by
the module's config) and diagnostics (detached tensors or floats for logging). It knows nothing
about the backbone or the tasks, so it can be added to or removed from any Ranker; removing it
is the ablation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from liverank.errors import ConfigError

if TYPE_CHECKING:
    from liverank.features.spec import FeatureMap
    from liverank.models.layers.embedding import EmbeddingCollection

Batch = Mapping[str, torch.Tensor]


@dataclass
class ModuleOutput:
    """What a FeatureModule returns."""

    representation: torch.Tensor  # [B, out_dim]
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)  # scalar tensors
    diagnostics: dict[str, torch.Tensor | float] = field(default_factory=dict)


def check_choices(
    owner: str, what: str, given: Sequence[str], allowed: Sequence[str]
) -> tuple[str, ...]:
    """``given`` as a tuple if it is a non-empty list of distinct names from ``allowed`` (e.g.
    the parts an ablation keeps), else a :class:`ConfigError` naming ``owner`` and ``what``."""
    unknown = [g for g in given if g not in allowed]
    if unknown or not given or len(set(given)) != len(given):
        raise ConfigError(
            f"{owner}: {what} must be distinct names from {tuple(allowed)}, got {list(given)}"
        )
    return tuple(given)


class FeatureModule(nn.Module):
    """Base class: batch fields in, representation + auxiliary losses + diagnostics out.

    Subclasses set ``name``, list the batch fields they read in ``required_fields`` (checked by
    the Ranker before the first forward, with an error naming the missing field), set
    ``self.out_dim`` in ``__init__`` and implement :meth:`forward`.
    """

    name: ClassVar[str] = "feature_module"
    required_fields: tuple[str, ...] = ()
    out_dim: int
    #: named column ranges ``[start, end)`` of the representation, for backbones that route
    #: parts of the input to different tasks (``intra_inter``); empty = one "shared" part
    output_parts: dict[str, tuple[int, int]] = {}  # noqa: RUF012 - read-only class default

    @classmethod
    def unfed(cls, feature_map: FeatureMap, params: dict[str, Any]) -> str | None:
        """Why samples with ``feature_map`` cannot feed this module (None: they can). A module
        marked ``optional`` in a config is switched off for that reason instead of failing
        (``ModuleSpec.optional``; the flagship composes every paper module this way)."""
        return None

    def forward(self, batch: Batch, emb: EmbeddingCollection) -> ModuleOutput:  # pragma: no cover
        raise NotImplementedError


def no_video_domain(feature_map: FeatureMap) -> bool:
    """The samples have no short-video domain (its tag table holds only the padding row:
    KuaiLive, say)."""
    return feature_map.tables.get("video_tag", 0) <= 1
