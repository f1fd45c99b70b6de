"""Model layers by kind: embeddings (and their deduplicating gathers), MLP, attention,
mixtures of experts, sequence pooling."""
