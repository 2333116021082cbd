"""Old path of :mod:`core.models.critic` (PPO's critic), kept because the README documented ``core.value_model.load_critic``.

New code imports from ``core.models.critic``."""

from .models.critic import PolicyWithValueHead, ValueModel, load_critic, save_critic

__all__ = ["PolicyWithValueHead", "ValueModel", "load_critic", "save_critic"]
