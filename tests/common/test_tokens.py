"""Token helpers: prompt encoding, left padding, EOS ids, completion lengths, by hand on tiny inputs."""

from __future__ import annotations

import pytest

from posttrain_llm.online_rl_trainer.core.common.tokens import eos_token_ids, left_pad, length_until_eos


def test_left_pad_puts_padding_before_the_prompt():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_left_pad_keeps_an_empty_sequence_all_padding():
    ids, mask = left_pad([[4, 5], []], pad_id=9)
    assert ids.tolist() == [[4, 5], [9, 9]] and mask.tolist() == [[1, 1], [0, 0]]


def test_length_until_eos_counts_the_first_eos_and_all_tokens_without_one():
    assert length_until_eos([3, 4, 2, 0, 2], eos_ids=[2]) == 3
    assert length_until_eos([3, 4, 5], eos_ids=[2]) == 3
    assert length_until_eos([7, 3], eos_ids=[2, 7]) == 1


class _Tok:
    def __init__(self, eos):
        self.eos_token_id = eos


class _Model:
    def __init__(self, eos):
        self.generation_config = type("GenerationConfig", (), {"eos_token_id": eos})()


def test_eos_ids_join_the_tokenizer_and_generation_config_without_duplicates():
    assert eos_token_ids(_Tok(2), _Model([2, 5])) == [2, 5]
    assert eos_token_ids(_Tok(None), _Model(7)) == [7]
    with pytest.raises(ValueError, match="needs one to know where a completion ends"):
        eos_token_ids(_Tok(None), _Model(None))


def test_encode_prompt_templates_a_chat_and_takes_a_string_as_is(tiny_model_dir):
    from transformers import AutoTokenizer

    from posttrain_llm.online_rl_trainer.core.common.tokens import encode_prompt
    from tests.builders import chat

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.decode(encode_prompt(tok, "1+1=")) == "1+1="
    assert tok.decode(encode_prompt(tok, chat("1+1="))) == "<|im_start|>user\n1+1=<|im_end|>\n<|im_start|>assistant\n"
