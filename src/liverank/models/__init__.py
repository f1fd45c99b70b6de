"""Models: shared embeddings -> FeatureModules -> multi-task backbone -> task heads.

Public entry points (see docs/models.md)::

    from liverank.models import Ranker, RankerConfig, get_config, list_configs
"""

from liverank.models.ranker import Ranker, RankerConfig, RankerOutput
from liverank.models.zoo import get_config, list_configs

__all__ = ["Ranker", "RankerConfig", "RankerOutput", "get_config", "list_configs"]
