"""Baseline encoders: clips and texts to embeddings (``embed_video``, ``embed_text``) or captions
(``describe``). Registered by ``vfeval_baselines.plugin``; each module keeps torch and transformers inside
its functions."""
