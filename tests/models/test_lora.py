"""LoRA (use_peft=True) for GRPO, RLOO and PPO on the tiny model: only the adapter trains, and both save modes
(lora_save="merged" | "adapter") reload to the trained policy's logits; adapter folders load in the evaluator."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from posttrain_llm.online_rl_trainer import OnlineRLTrainer, TrainerConfig
from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer
from tests.builders import plus_one_rows

torch.set_num_threads(1)
IDS = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
CASES = [(algo, mode) for algo in ("grpo", "rloo", "ppo") for mode in ("merged", "adapter")]


def frac7(completions, **kwargs):
    return [c[0]["content"].count("7") / max(1, len(c[0]["content"])) for c in completions]


def _logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.fixture(scope="module", params=CASES, ids=[f"{a}-{m}" for a, m in CASES])
def trained(request, tmp_path_factory, tiny_model_dir):
    """A 2-step LoRA run: (trainer, saved folder, adapter-free parameters before training, LoRA params before)."""
    algo, mode = request.param
    tmp = tmp_path_factory.mktemp(f"lora-{algo}-{mode}")
    extra = dict(ppo_epochs=1, num_mini_batches=1) if algo == "ppo" else {}
    cfg = TrainerConfig(trainer_type=algo, model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=4,
                        lora_alpha=8, lora_save=mode, max_steps=2, learning_rate=1e-2,
                        kl_coef=0.0 if algo == "grpo" else 0.05, max_completion_length=5, num_generations=4,
                        per_device_train_batch_size=8, output_dir=str(tmp / "run"), save_steps=1000,
                        torch_num_threads=1, **extra)
    trainer = OnlineRLTrainer(cfg, frac7, plus_one_rows(8))
    state = trainer.backend.model.state_dict()
    base = {k: v.clone() for k, v in state.items() if "lora_" not in k}
    lora = {k: v.clone() for k, v in state.items() if "lora_" in k}
    trainer.train()
    out = trainer.save_model(tmp / "final")
    return trainer, out, base, lora


def test_only_the_adapter_trains(trained):
    trainer, _, base, lora = trained
    now = trainer.backend.model.state_dict()
    assert base and lora
    assert all(torch.equal(now[k], v) for k, v in base.items())
    assert any(not torch.equal(now[k], v) for k, v in lora.items() if "lora_B" in k)


def test_the_saved_folder_reloads_the_trained_logits(trained, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trainer, out, _, _ = trained
    expected = _logits(trainer.backend.model)
    base_logits = _logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    assert (expected - base_logits).abs().max() > 1e-3  # the adapter matters, so the checks below can fail
    if trainer.config.lora_save == "merged":
        assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
        assert (out / "adapter" / "adapter_model.safetensors").is_file()
        # Merged weights compute (W + sBA)x instead of Wx + sB(Ax): equal up to float rounding, not bit for bit.
        assert torch.allclose(_logits(AutoModelForCausalLM.from_pretrained(out)), expected, atol=1e-5, rtol=0)
    else:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
        assert not list(out.glob("model*.safetensors"))
        assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
        with_peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
        assert torch.equal(_logits(with_peft), expected)
        unmerged, _ = load_model_and_tokenizer(str(out), merge_lora=False)
        assert torch.equal(_logits(unmerged), expected)
        merged, tokenizer = load_model_and_tokenizer(str(out))
        assert type(merged).__name__ == "LlamaForCausalLM" and tokenizer.padding_side == "left"
        assert torch.allclose(_logits(merged), expected, atol=1e-5, rtol=0)


def test_lora_save_is_validated():
    from posttrain_llm.online_rl_trainer import ConfigError

    with pytest.raises(ConfigError, match="lora_save='full' is not supported; accepted values: merged, adapter"):
        TrainerConfig(model_name_or_path="m", lora_save="full")


@pytest.mark.parametrize("trained", [("grpo", "adapter")], indirect=True, ids=["grpo-adapter"])
def test_evaluate_model_accepts_an_adapter_folder(trained, tmp_path):
    from posttrain_llm.online_rl_trainer import ModelEvaluator
    from posttrain_llm.online_rl_trainer.examples import evaluate_model

    trainer, out, _, _ = trained
    result = evaluate_model.main(["--model", str(out), "--num-samples", "6", "--threads", "1",
                                  "--output", str(tmp_path / "eval.json")])
    assert result["n"] == 6
    # The same problems through the trained policy (merged in memory, as the loader merges) give the same completions.
    rows = [{"prompt": r["prompt"], "answer": r["answer"]} for r in result["records"]]
    policy = copy.deepcopy(trainer.backend.model).merge_and_unload()
    direct = ModelEvaluator(policy, trainer.tokenizer, max_new_tokens=16,
                            show_progress=False).evaluate(rows, lambda completions, **kw: [0.0] * len(completions))
    assert [r["completion"] for r in direct["records"]] == [r["completion"] for r in result["records"]]
