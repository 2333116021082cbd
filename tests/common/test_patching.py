"""core.common.patching.patched: what the object held is put back exactly, on exit, on error, nested."""

import types

import pytest

from posttrain_llm.online_rl_trainer.core.common.patching import patched


class Model:
    def generate(self):
        return "class"


def test_inherited_method_is_deleted_again_so_the_class_method_shows_through():
    model = Model()
    with patched(model, "generate", lambda: "patched"):
        assert model.generate() == "patched"
        assert "generate" in vars(model)
    assert "generate" not in vars(model)
    assert model.generate() == "class"


def test_an_instance_attribute_set_by_someone_else_is_put_back():
    model = Model()
    theirs = lambda: "theirs"  # noqa: E731
    model.generate = theirs
    with patched(model, "generate", lambda: "ours"):
        assert model.generate() == "ours"
    assert vars(model)["generate"] is theirs


def test_module_function_restored_after_an_error():
    module = types.ModuleType("m")
    module.f = original = lambda: 1
    with pytest.raises(RuntimeError), patched(module, "f", lambda: 2):
        assert module.f() == 2
        raise RuntimeError("inside the block")
    assert module.f is original


def test_nested_blocks_unwind_in_order():
    model = Model()
    with patched(model, "generate", lambda: "outer"):
        with patched(model, "generate", lambda: "inner"):
            assert model.generate() == "inner"
        assert model.generate() == "outer"
    assert "generate" not in vars(model)


def test_torch_module_keeps_its_parameters_untouched():
    torch = pytest.importorskip("torch")
    layer = torch.nn.Linear(2, 2)
    with patched(layer, "forward", lambda x: x):
        assert layer(torch.ones(2)).tolist() == [1.0, 1.0]
    assert "forward" not in vars(layer)
    assert set(dict(layer.named_parameters())) == {"weight", "bias"}
