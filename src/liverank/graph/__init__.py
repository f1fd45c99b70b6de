"""MMBee's graph-guided interest expansion, the graph part (Lin et al., KDD 2024, section 5).

* :mod:`.gifting`: the U2A gifting graph (user -> author, weight = gift amount), as of a time;
* :mod:`.swing`: the A2A Swing similarity graph (Eq. 8) and a top-k helper;
* :mod:`.metapath`: top-k metapath-guided neighbours of every user and author (Def. 1-2);
* :mod:`.store`: the offline neighbour store (section 5.4) and its vectorised lookup.

See ``docs/graph.md``. (The function ``swing`` is not re-exported here: it would shadow its
module; import it from :mod:`liverank.graph.swing`.)
"""

from liverank.graph.gifting import GiftGraph, build_u2a, u2a_from_arrays
from liverank.graph.metapath import METAPATHS, metapath_neighbours
from liverank.graph.store import NeighbourStore, build_neighbour_store
from liverank.graph.swing import top_k

__all__ = [
    "METAPATHS",
    "GiftGraph",
    "NeighbourStore",
    "build_neighbour_store",
    "build_u2a",
    "metapath_neighbours",
    "top_k",
    "u2a_from_arrays",
]
