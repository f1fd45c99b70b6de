"""Public-dataset loaders (``liverank ingest``): KuaiLive (:mod:`.kuailive`) to the canonical
tables, every source row accounted for (:mod:`.common`)."""
