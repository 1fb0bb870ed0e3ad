"""vfeval's baselines: the pipelines every result is read against, registered by ``plugin.py``.

- ``encoders/``: what turns clips and texts into embeddings or captions (``pixel``, ``hashed-text``,
  ``hf-clip``, the segment captioners ``retrieval`` and ``hf-image-captioner``, the ``precomputed`` caption
  source);
- ``aggregators/``: what turns a video's segments into an answer (the ``random``, ``blind`` and
  ``constant`` floors, the learned ``attention`` pooler, ``nearest-caption``, the LLoVi-style ``llm``);
- helpers they share: ``caption_bank`` (caption files for ``retrieval`` and ``nearest-caption``), ``hf``
  (loading Hugging Face models), ``causal_lm`` and ``prompts`` (the language model ``llm`` drives).

Tiny Hugging Face models for tests and offline smoke runs are built by ``vfeval.testing_models``.
"""
