"""Quieting the FutureWarnings that TRL and peft raise about *their own* calls of transformers' renamed API.

transformers 5 renamed gradient checkpointing to activation checkpointing and warns on the old names. Our code uses
the new ones (``trl_backend.to_trl_args``, ``ppo_setup.enable_activation_checkpointing``), but TRL 1.16 and peft
0.21 (the newest releases) still read ``model.is_gradient_checkpointing`` and call ``gradient_checkpointing_enable``
/ ``_disable`` inside their own code: TRL around every generation, peft whenever it wraps a model
(``get_peft_model``, ``PeftModel.from_pretrained``). No argument of ours avoids those, so
:func:`quiet_library_checkpointing_aliases` silences exactly these messages, only around those library calls;
every other warning, and these raised anywhere else, still shows.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

#: transformers' FutureWarning text for the old checkpointing names the libraries still call.
OLD_CHECKPOINTING_NAMES = r"`(is_gradient_checkpointing|gradient_checkpointing_(enable|disable))` is deprecated"


@contextlib.contextmanager
def quiet_library_checkpointing_aliases() -> Iterator[None]:
    """Ignore transformers' FutureWarning about the old checkpointing names while the block runs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=OLD_CHECKPOINTING_NAMES, category=FutureWarning)
        yield
