"""The README.md model card: the pure renderer (training/model_card.py) and real saves of GRPO, RLOO, PPO and LoRA runs."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
import torch
import yaml

from posttrain_llm.online_rl_trainer import MathRewardFunction, OnlineRLTrainer, TrainerConfig
from posttrain_llm.online_rl_trainer.core.training.model_card import (
    ModelCardFacts,
    card_metadata,
    is_hub_id,
    render_model_card,
    settings_from_config,
)
from posttrain_llm.online_rl_trainer.core.training.model_card_facts import cli_command, describe_base

torch.set_num_threads(1)

#: Phrases of TRL's generic card (trl/templates/lm_model_card.md) and of peft's template.
TEMPLATE_PHRASES = ("fine-tuned version of", "time machine", "[None]", "Model Card for Model ID",
                    "More Information Needed")


def _front_matter(card: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", card, re.S)
    assert match, "the card does not start with YAML front matter"
    return yaml.safe_load(match.group(1))


def _python_block_after(card: str, heading: str) -> str:
    section = card.split(heading, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def _facts(**kw) -> ModelCardFacts:
    algorithm = kw.pop("algorithm", "grpo")
    grpo = dict(loss_type="dr_grpo") if algorithm == "grpo" else {}
    config = TrainerConfig(trainer_type=algorithm, num_generations=8, learning_rate=3e-4, max_steps=40, kl_coef=0.04,
                           **grpo).to_dict()
    settings, lora = settings_from_config(config)
    base = dict(algorithm=config["trainer_type"], base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
                hub_base_model="HuggingFaceTB/SmolLM2-135M-Instruct", folder="outputs/run/final", settings=settings,
                lora=lora, rewards=[("math_accuracy", 1.0), ("format", 0.2)], steps=40, train_seconds=312.0,
                dataset={"name": "gsm8k", "size": 7473, "fingerprint": "abc123"},
                comparison={"accuracy_a": 0.31, "accuracy_b": 0.42, "n_paired": 300, "mcnemar_p": 0.0004,
                            "only_a": 6, "only_b": 39, "difference_b_minus_a": 0.11, "difference_ci95": [0.06, 0.16]},
                example_prompt=[{"role": "user", "content": "What is 2+3?"}])
    base.update(kw)
    return ModelCardFacts(**base)


# ------------------------------------------------------------------------------------------------- pure renderer
def test_front_matter_is_valid_hub_metadata():
    from huggingface_hub import ModelCard

    card = render_model_card(_facts())
    meta = _front_matter(card)
    assert meta["library_name"] == "transformers"
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["pipeline_tag"] == "text-generation"
    assert {"posttrain-llm", "grpo", "reinforcement-learning"} <= set(meta["tags"])
    parsed = ModelCard(card).data  # huggingface_hub's own parser
    assert parsed.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and parsed.library_name == "transformers"
    assert "grpo" in parsed.tags


def test_card_names_the_algorithm_settings_rewards_data_steps_and_results():
    card = render_model_card(_facts())
    for text in ("# GRPO on SmolLM2-135M-Instruct", "`HuggingFaceTB/SmolLM2-135M-Instruct`", "| `num_generations` | 8 |",
                 "| `learning_rate` | 0.0003 |", "| `kl_coef` | 0.04 |", "| `loss_type` | dr_grpo |",
                 "`math_accuracy` (weight 1)", "`format` (weight 0.2)", "40 optimizer steps in 5.2 min",
                 "`gsm8k`, 7473 rows", "abc123", "| before RL | 0.310 |", "| after RL | 0.420 |", "+0.110",
                 "McNemar exact p = 0.0004", "AutoModelForCausalLM", "ModelEvaluator", "--dataset gsm8k",
                 "TrainerConfig.from_yaml('online_rl_config.yaml')"):
        assert text in card, text
    assert not any(phrase in card for phrase in TEMPLATE_PHRASES)


def test_a_builtin_or_local_base_has_no_hub_base_model():
    card = render_model_card(_facts(base_model="builtin:tiny-char-llama", hub_base_model=None))
    assert "base_model" not in _front_matter(card)
    assert "`builtin:tiny-char-llama`" in card
    with pytest.raises(ValueError, match="not a Hub repository id"):
        _facts(hub_base_model="builtin:tiny-char-llama")
    with pytest.raises(ValueError, match="not a Hub repository id"):
        _facts(hub_base_model="/tmp/some/folder")


@pytest.mark.parametrize("name, expected", [
    ("HuggingFaceTB/SmolLM2-135M-Instruct", True), ("gpt2", True), ("Qwen/Qwen2.5-0.5B-Instruct", True),
    ("builtin:tiny-char-llama", False), ("/tmp/run/final", False), ("./warmup", False), ("a/b/c", False),
    ("bad--name/x", False), ("", False),
])
def test_hub_id_shape(name, expected):
    assert is_hub_id(name) is expected


def test_adapter_and_ppo_metadata():
    meta = card_metadata(_facts(layout="adapter", lora={"lora_r": 4}))
    assert meta["library_name"] == "peft" and "lora" in meta["tags"]
    ppo = _facts(algorithm="ppo")
    assert "ppo" in card_metadata(ppo)["tags"] and "trl" not in card_metadata(ppo)["tags"]
    card = render_model_card(ppo)
    assert "| `vf_coef` |" in card and "| `loss_type` |" not in card


def test_unknown_results_are_said_to_be_missing():
    card = render_model_card(_facts(comparison=None, evaluations=[]))
    assert "No held-out evaluation was recorded" in card


def test_describe_base(tmp_path):
    assert describe_base("builtin:tiny-char-llama")[0] is None
    assert describe_base("HuggingFaceTB/SmolLM2-135M-Instruct") == ("HuggingFaceTB/SmolLM2-135M-Instruct", None)
    assert describe_base(str(tmp_path)) == (None, "a local folder")
    TrainerConfig(model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct").save_yaml(tmp_path / "online_rl_config.yaml")
    hub_id, note = describe_base(str(tmp_path))
    assert hub_id == "Qwen/Qwen2.5-0.5B-Instruct" and "Qwen/Qwen2.5-0.5B-Instruct" in note


def test_cli_command_only_for_the_package_clis():
    import posttrain_llm.online_rl_trainer.examples.train_math as train_math

    script = train_math.__file__
    module = "posttrain_llm.online_rl_trainer.examples.train_math"
    assert cli_command([script, "--max-steps", "2"], ["/venv/bin/python", "-m", module, "--max-steps", "2"]) == \
        f"python -m {module} --max-steps 2"
    assert cli_command(["/venv/bin/online-rl", "train", "--trainer", "ppo"], []) == "online-rl train --trainer ppo"
    assert cli_command(["/home/me/my_script.py", "--x"], ["python", "/home/me/my_script.py", "--x"]) is None
    assert cli_command([""], ["python"]) is None


# ------------------------------------------------------------------------------------------------- real saves
def _rows(n=16):
    return [{"prompt": f"{a}+1=", "answer": str(a + 1)} for a in range(n)]


@pytest.fixture(scope="module", params=["grpo", "rloo", "ppo"])
def saved(request, tmp_path_factory, tiny_model_dir):
    """A 2-step run with a checkpoint per step and held-out evaluation at steps 0, 2; (trainer, folder, run dir)."""
    algo = request.param
    tmp = tmp_path_factory.mktemp(f"card-{algo}")
    extra = dict(ppo_epochs=1) if algo == "ppo" else {}
    config = TrainerConfig(trainer_type=algo, model_name_or_path=str(tiny_model_dir), max_steps=2, learning_rate=1e-3,
                           kl_coef=0.0, max_completion_length=6, num_generations=4, per_device_train_batch_size=8,
                           output_dir=str(tmp / "run"), save_steps=1, eval_steps=2, torch_num_threads=1, **extra)
    trainer = OnlineRLTrainer(config, MathRewardFunction(), _rows(), eval_data=_rows(8))
    trainer.evaluate()
    trainer.train()
    return trainer, trainer.save_model(tmp / "final"), tmp / "run"


def test_a_real_save_writes_our_card_not_trls(saved):
    trainer, folder, run_dir = saved
    card = (folder / "README.md").read_text()
    algo = trainer.config.trainer_type
    assert not any(phrase in card for phrase in TEMPLATE_PHRASES)
    meta = _front_matter(card)
    assert algo in meta["tags"] and meta["library_name"] == "transformers"
    assert "base_model" not in meta  # a local folder: nothing the Hub would accept
    for text in (f"({algo.upper()})", "`math_accuracy` (weight 1)", "2 optimizer steps", "16 rows",
                 trainer.train_dataset._fingerprint, "Paired over 8 problems", f"folder = {str(folder.absolute())!r}"):
        assert text in card, text
    assert "| 0 | " in card and "| 2 | " in card  # held-out accuracy at steps 0 and 2
    assert [p.name for p in run_dir.glob("checkpoint-*")]  # checkpoints were written...
    assert not (run_dir / "README.md").exists()  # ...without TRL's card in the run folder
    if algo == "ppo":
        assert "`critic/`" in card


def test_the_loading_snippet_runs(saved):
    _, folder, _ = saved
    code = _python_block_after((folder / "README.md").read_text(), "## How to load it")
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["output"].shape[1] > namespace["inputs"]["input_ids"].shape[1]  # it generated
    assert printed.getvalue().endswith("\n")  # and printed the completion


def test_write_model_card_adds_callers_facts_and_later_saves_keep_them(saved, tmp_path):
    trainer, folder, _ = saved
    trainer.write_model_card(folder, dataset_name="arithmetic", base_model="builtin:tiny-char-llama",
                             warmup={"steps": 120, "holdout_accuracy": 0.31})
    card = (folder / "README.md").read_text()
    for text in ("`builtin:tiny-char-llama`", "supervised warm-up", "steps 120", "holdout accuracy 0.31",
                 "`arithmetic`, 16 rows", "--dataset arithmetic", "is the warm-up folder"):
        assert text in card, text
    again = trainer.save_model(tmp_path / "again")
    assert "`arithmetic`, 16 rows" in (again / "README.md").read_text()
    with pytest.raises(TypeError, match="unknown model card fact"):
        trainer.write_model_card(folder, datset_name="typo")


# The adapter card's snippet loads with peft, which reads a deprecated transformers alias itself (common/deprecations.py).
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_merged_save_has_our_card_at_the_top_and_in_adapter(tmp_path, tiny_model_dir):
    config = TrainerConfig(model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=4, lora_alpha=8,
                           lora_save="merged", max_steps=1, learning_rate=1e-2, kl_coef=0.0, max_completion_length=5,
                           num_generations=4, per_device_train_batch_size=8, output_dir=str(tmp_path / "run"),
                           save_steps=1000, torch_num_threads=1)
    trainer = OnlineRLTrainer(config, MathRewardFunction(), _rows())
    trainer.train()
    folder = trainer.save_model(tmp_path / "final")
    top, adapter = (folder / "README.md").read_text(), (folder / "adapter" / "README.md").read_text()
    assert _front_matter(top)["library_name"] == "transformers" and "lora" in _front_matter(top)["tags"]
    assert _front_matter(adapter)["library_name"] == "peft"
    assert "| `lora_r` | 4 |" in top and "AutoPeftModelForCausalLM" in adapter
    for card in (top, adapter):
        assert not any(phrase in card for phrase in TEMPLATE_PHRASES)
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(_python_block_after(adapter, "## How to load it"), "adapter/README.md", "exec"), namespace)
    assert namespace["output"].shape[1] > namespace["inputs"]["input_ids"].shape[1]


@pytest.mark.parametrize("prompt", ["7+5=", "x" * 2000, [{"role": "user", "content": "y" * 2000}]])
def test_the_loading_snippet_is_valid_python_for_any_prompt(prompt):
    card = render_model_card(_facts(example_prompt=prompt))
    compile(_python_block_after(card, "## How to load it"), "README.md", "exec")
    if isinstance(prompt, str) and len(prompt) < 100:
        assert f"prompt = {prompt!r}" in card


def test_save_model_keeps_the_model_when_the_card_facts_fail(tmp_path, tiny_model_dir, monkeypatch, caplog):
    from posttrain_llm.online_rl_trainer.core.training import model_card_facts

    def broken(*args, **kwargs):
        raise KeyError("prompt")

    config = TrainerConfig(model_name_or_path=str(tiny_model_dir), max_steps=1, kl_coef=0.0, max_completion_length=4,
                           num_generations=4, per_device_train_batch_size=8, output_dir=str(tmp_path / "run"),
                           save_steps=1000, torch_num_threads=1)
    trainer = OnlineRLTrainer(config, MathRewardFunction(), _rows())
    monkeypatch.setattr(model_card_facts, "trainer_card_facts", broken)
    folder = trainer.save_model(tmp_path / "final")
    assert (folder / "model.safetensors").is_file() and not (folder / "README.md").exists()
    assert "no model card written" in caplog.text
    with pytest.raises(KeyError):  # asked for explicitly, the failure is the caller's to see
        trainer.write_model_card(folder)
