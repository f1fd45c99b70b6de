"""LiveForesighter (``papers/liveforesighter.txt``): forecasting a room's statistic sequences and
its next product category, for the ranker (:mod:`liverank.models.modules.foresighter`)."""
