"""Baseline aggregators: a video's per-segment outputs to an answer (choice scores, embeddings or text).
Registered by ``vfeval_baselines.plugin``; each module keeps torch and transformers inside its functions."""
