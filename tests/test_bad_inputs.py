"""Bad or unusual input: errors that name the argument, and the caller's model and data left untouched."""

import copy

import pytest
import torch
import torch.nn as nn
from helpers import compress_checked, randomize
from models import Chain

import fxprune
from fxprune.graph.inputs import as_batches


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Conv2d(3, 7, 3), nn.Conv2d(5, 7, 3), nn.Conv2d(7, 11, 1)

    def forward(self, x, y):
        return self.out(torch.relu(self.a(x) + self.b(y)))


class DictOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.mask, self.score = nn.Conv2d(3, 7, 3, padding=1), nn.Conv2d(7, 2, 1), nn.Linear(7, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return {"mask": self.mask(x), "score": self.score(x.mean((2, 3)))}


class Tokens(nn.Module):
    """Integer token ids are a model's legitimate input: the embedding's rows stay, its width may shrink."""

    def __init__(self, max_norm=None):
        super().__init__()
        self.embed, self.hidden, self.out = nn.Embedding(19, 7, max_norm=max_norm), nn.Linear(7, 11), nn.Linear(11, 3)

    def forward(self, tokens):
        return self.out(torch.relu(self.hidden(self.embed(tokens)))).mean(1)


def test_data_on_another_device_than_the_model_is_named():
    with pytest.raises(fxprune.InputError, match="data: batch 0 is on meta .* model's weights are on cpu"):
        fxprune.compress(Chain(), torch.randn(2, 3, 8, 8, device="meta"))
    with pytest.raises(fxprune.InputError, match="data: .* on cpu .* weights are on meta"):
        fxprune.compress(Chain().to("meta"), torch.randn(2, 3, 8, 8))


def test_integer_inputs_to_a_float_model_are_named_with_their_dtype():
    with pytest.raises(fxprune.InputError, match="(?s)data: .*torch.int64"):
        fxprune.compress(Chain(), torch.randint(0, 9, (2, 3, 8, 8)))


def test_integer_token_inputs_compress():
    small, analysis, plan, result = compress_checked(randomize(Tokens()), (torch.randint(0, 19, (2, 6)),))
    assert result.exact and small.get_submodule("hidden").out_features < 11
    assert small.get_submodule("embed").weight.shape == (19, 4) and small.get_submodule("embed").embedding_dim == 4


def test_an_embedding_with_max_norm_keeps_its_width():
    """``max_norm`` rescales each row by its norm over all columns: removing a column changes the rest."""
    small, *_ = compress_checked(randomize(Tokens(max_norm=1.0)), (torch.randint(0, 19, (2, 6)),))
    assert small.get_submodule("embed").embedding_dim == 7


def test_several_inputs_are_passed_as_a_tuple():
    x, y = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 8, 8)
    small, *_ = compress_checked(randomize(TwoInputs()), (x, y))
    assert fxprune.compress(randomize(TwoInputs()), (x, y), round_to=1)(x, y).shape == small(x, y).shape


class FeaturesAndIds(nn.Module):
    """Two inputs, the second integer ids of one per sample: an (x, ids) pair that looks like (x, labels)."""

    def __init__(self):
        super().__init__()
        self.conv, self.embed, self.head = nn.Conv2d(3, 8, 3), nn.Embedding(4, 8), nn.Linear(8, 5)

    def forward(self, x, ids):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)) + self.embed(ids))


def test_a_model_requiring_two_inputs_reads_an_integer_second_tensor_as_an_input():
    x, ids = torch.randn(2, 3, 8, 8), torch.tensor([1, 3])
    small = fxprune.compress(randomize(FeaturesAndIds()), (x, ids), round_to=1)
    assert small(x, ids).shape == (2, 5) and small.get_submodule("conv").out_channels == 4
    assert compress_checked(randomize(FeaturesAndIds()), (x, ids))[3].exact


def test_missing_inputs_are_named():
    with pytest.raises(fxprune.InputError, match=r"data: the model takes 2 input\(s\) \(x, y\) but got 1"):
        fxprune.compress(TwoInputs(), torch.randn(2, 3, 8, 8))


def test_dict_outputs_keep_their_keys_and_shapes():
    model, x = randomize(DictOutput()), torch.randn(2, 3, 8, 8)
    small, *_ = compress_checked(model, (x,))
    got, want = small(x), model(x)
    assert list(got) == ["mask", "score"] and all(got[k].shape == want[k].shape for k in want)
    assert small.get_submodule("stem").out_channels < 7


def _snapshot(model: nn.Module, tensors) -> dict:
    return {
        "state": copy.deepcopy(model.state_dict()),
        "params": [(n, p.requires_grad, p.grad) for n, p in model.named_parameters()],
        "training": [(n, m.training) for n, m in model.named_modules()],
        "modules": [(n, type(m)) for n, m in model.named_modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()],
        "data": [t.clone() for t in tensors],
    }


def _same(before: dict, after: dict) -> bool:
    tensors_equal = all(torch.equal(a, b) for a, b in zip(before["data"], after["data"]))
    states_equal = before["state"].keys() == after["state"].keys() and all(
        torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    rest = ("params", "training", "modules", "hooks")
    return tensors_equal and states_equal and all(before[k] == after[k] for k in rest)


@pytest.mark.parametrize("method", ["l1", "taylor", "bn_scale"])
def test_model_in_training_mode_and_its_data_are_never_modified(method):
    model = randomize(Chain()).train()
    model.b1.eval()  # a mix of flags, restored one by one
    data = [torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)]
    before = _snapshot(model, data)
    small = fxprune.compress(model, data, ratio=0.5, method=method, round_to=1)
    fxprune.analyze(model, data[0])
    assert _same(before, _snapshot(model, data))
    assert small.training  # the result comes back in the caller's mode


@pytest.mark.parametrize("method", ["l1", "taylor"])
def test_training_mode_does_not_change_the_result(method):
    model, x = randomize(Chain()), torch.randn(4, 3, 8, 8)
    in_eval = fxprune.compress(copy.deepcopy(model).eval(), x, ratio=0.5, method=method, round_to=1).eval()
    in_train = fxprune.compress(copy.deepcopy(model).train(), x, ratio=0.5, method=method, round_to=1).eval()
    assert in_eval.fxprune_plan.to_json() == in_train.fxprune_plan.to_json()
    assert torch.equal(in_eval(x), in_train(x))


def test_compress_submodule_changes_only_the_named_submodule():
    outer = nn.Sequential(randomize(Chain()), nn.Linear(11, 3))
    data = torch.randn(2, 3, 8, 8)
    head_before = _snapshot(outer[1], [data])
    fxprune.compress_submodule(outer, "0", data, ratio=0.5, round_to=1)
    assert isinstance(outer[0], torch.fx.GraphModule) and _same(head_before, _snapshot(outer[1], [data]))


def test_one_hot_targets_are_named_as_targets():
    x, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 3, 10, 1])
    one_hot = nn.functional.one_hot(labels, 11).float()
    with pytest.raises(fxprune.InputError, match=r"(?s)data: .*one-hot or probability targets.*class indices "
                                                 r"\(int64\), e\.g\. \(x, targets\.argmax\(1\)\)"):
        fxprune.compress(Chain(), (x, one_hot))
    assert fxprune.compress(Chain(), (x, one_hot.argmax(1)), round_to=1).fxprune_plan.removed_channels > 0
    with pytest.raises(fxprune.InputError, match=r"data: the model takes 1 input\(s\) \(x\) but got 2; pass several"):
        fxprune.compress(Chain(), (x, torch.randn(4, 5, 8, 8)))  # not targets: the count is what is wrong


def test_ignore_takes_one_name_as_a_string():
    small = fxprune.compress(randomize(Chain()), torch.randn(2, 3, 8, 8), ignore="c1", round_to=1)
    assert small.get_submodule("c1").out_channels == 5 and small.get_submodule("c2").out_channels < 7
    assert "module c1 is in ignore" in str(fxprune.analyze(Chain(), torch.randn(2, 3, 8, 8), ignore="c1"))


def test_ignore_that_is_not_a_list_of_names_is_named():
    with pytest.raises(fxprune.InputError, match="ignore: expected a module name or a list of them .* got int"):
        fxprune.compress(Chain(), torch.randn(2, 3, 8, 8), ignore=3)
    model = Chain()
    with pytest.raises(fxprune.InputError, match="ignore: expected module names .* got a Linear"):
        fxprune.compress(model, torch.randn(2, 3, 8, 8), ignore=[model.fc])


def test_an_image_without_its_batch_dimension_is_named():
    for call in (fxprune.compress, fxprune.analyze):
        with pytest.raises(fxprune.InputError, match=r"data: got shape \(3, 8, 8\) for x, but c1 \(Conv2d\) takes 4 "
                                                     r"dims.*missing batch dimension\? use x\.unsqueeze\(0\)"):
            call(Chain(), torch.randn(3, 8, 8))


def test_wrapped_torch_errors_leave_out_its_log_tool_advertisement():
    with pytest.raises(fxprune.InputError, match="data: the model rejects inputs") as caught:
        fxprune.compress(Chain(), torch.randn(2, 5, 8, 8))  # 5 channels where c1 takes 3
    message = str(caught.value)
    assert "expected input[1, 5, 8, 8] to have 3 channels" in message
    assert "tlparse" not in message and "TORCH_LOGS" not in message and "Original traceback:\nNone" not in message


class MaskedTokens(Tokens):
    """Takes a tokenizer's output by name: ``model(**batch)``."""

    def forward(self, input_ids, attention_mask=None):
        hidden = torch.relu(self.hidden(self.embed(input_ids)))
        return self.out(hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)).mean(1)


def test_dict_batches_are_keyword_inputs_captured_by_export_and_refused_by_fx():
    tokens = {"input_ids": torch.randint(0, 19, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    labels = torch.tensor([0, 2])
    batch = as_batches([(tokens, labels)])[0]  # a (dict, targets) pair
    assert batch.inputs.keywords == ("input_ids", "attention_mask") and batch.targets is labels
    assert batch.kwargs.keys() == tokens.keys() and batch.args == () and not batch.inputs[0].is_floating_point()
    model = randomize(MaskedTokens())
    small = fxprune.compress(model, [tokens, tokens], ratio=0.5, round_to=1)  # "auto": straight to export
    assert small.get_parameter("hidden.weight").shape == (6, 4)  # the ids stay ids; the widths shrink
    longer = {"input_ids": torch.randint(0, 19, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long)}
    assert small(**longer).shape == small(*longer.values()).shape == (3, 3)
    with pytest.raises(fxprune.InputError, match=r"data: a dict batch \(keyword inputs input_ids, attention_mask\) "
                                                 r"needs capture='export' or 'auto'"):
        fxprune.compress(model, tokens, capture="fx")
    with pytest.raises(fxprune.InputError, match=r"data: item 0 is a dict with 'attention_mask': list; a dict batch "
                                                 r"maps forward's argument names to tensors"):
        fxprune.compress(model, [{**tokens, "attention_mask": [1, 1]}])
    with pytest.raises(fxprune.InputError, match=r"data: the dict batch does not fit MaskedTokens.forward \(got an "
                                                 r"unexpected keyword argument 'labels'\); its arguments are "
                                                 r"input_ids, attention_mask"):
        fxprune.compress(model, {**tokens, "labels": torch.tensor([0, 1])})


def test_export_with_a_wrongly_shaped_example_names_the_shape_compress_saw(tmp_path):
    small = fxprune.compress(randomize(Chain()), torch.randn(2, 3, 8, 8), round_to=1)
    with pytest.raises(fxprune.InputError, match=r"example: the model rejects inputs of shape \(2, 5, 8, 8\) "
                                                 r"\(RuntimeError: .*\); it expects \(1, 3, 8, 8\) float32, "
                                                 r"the shapes compress saw \(any batch size\)"):
        fxprune.export_onnx(small, torch.randn(2, 5, 8, 8), tmp_path / "small.onnx")
    assert not (tmp_path / "small.onnx").exists()


@pytest.mark.parametrize("method", ["taylor", "mlacp", "finetune"])
def test_targets_out_of_range_are_named_with_the_number_of_classes(method):
    data = (torch.randn(4, 3, 8, 8), torch.tensor([0, 3, 500, 1]))  # Chain has 11 classes
    expected = r"data: the targets of batch 0 hold class 500 but the model outputs 11 classes; .*in \[0, 11\)"
    with pytest.raises(fxprune.InputError, match=expected):
        if method == "finetune":
            fxprune.finetune(fxprune.compress(Chain(), data[0]), data, max_steps=1, device="cpu")
        else:
            fxprune.compress(Chain(), data, method=fxprune.MLACP(progress=False) if method == "mlacp" else method)


@pytest.mark.parametrize("text, field", [
    ("{}", "missing field 'groups'"),
    ("[1, 2]", "missing field 'groups'"),
    ('{"groups": {}}', "field 'groups' must be a list"),
    ('{"groups": [{"anchor": "c1.weight", "dim": 0, "indices": [0, 1]}]}', "group 0 is missing field 'keep'"),
    ('{"groups": [{"anchor": "c1.weight", "dim": "0", "indices": [0], "keep": [0]}]}',
     "field 'dim' of group 0 must be an integer"),
    ('{"groups": [{"anchor": "c1.weight", "dim": 0, "indices": [0], "keep": [0], "size": 1}]}',
     "group 0 has unknown field 'size'"),
    ('{"groups": [{"anchor": "c1.weight", "dim": 0, "indices": [0], "keep": [4]}]}',
     "field 'keep' of group 0 names channels not in its 'indices'"),
    ("not json", "not JSON text"),
])
def test_malformed_plans_name_the_field(text, field):
    with pytest.raises(fxprune.InputError, match=f"plan: {field}.*; pass the text Plan.to_json wrote"):
        fxprune.Plan.from_json(text)


def test_unknown_mlacp_options_are_listed():
    with pytest.raises(fxprune.InputError, match="MLACP: unknown option 'foo'; it accepts alpha, beta, terms, steps, "
                                                 "lr, momentum, calibration_batches, least_squares, selection, "
                                                 "rounds, classification, progress$"):
        fxprune.MLACP(foo=3)
    with pytest.raises(fxprune.InputError, match="MLACP: 13 positional options; it accepts alpha"):
        fxprune.MLACP(*range(13))
    assert fxprune.MLACP(0.5, steps=2).alpha == 0.5


class Branching(nn.Module):
    """Python control flow on a flag argument: only concrete_args lets torch.fx trace it."""

    def __init__(self):
        super().__init__()
        self.wide, self.narrow, self.out = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x, flag=False):
        x = self.wide(x) if flag else self.narrow(x)
        return self.out(torch.relu(x))


def test_concrete_args_fix_a_flag_the_forward_branches_on():
    model, x = randomize(Branching()), torch.randn(2, 3, 8, 8)
    with pytest.raises(fxprune.TraceError, match=r"concrete_args=\{'flag': True\}"):
        fxprune.compress(model, x, capture="fx")  # "auto" would capture it by export, at the default flag
    small = fxprune.compress(model, x, concrete_args={"flag": True}, round_to=1)
    assert small.get_submodule("wide").out_channels == 4 and small(x).shape == model(x, True).shape
    assert "wide (out)" in str(fxprune.analyze(model, x, concrete_args={"flag": True}))
    outer = nn.Sequential(model)
    fxprune.compress_submodule(outer, "0", x, concrete_args={"flag": True}, round_to=1)
    assert outer(x).shape == (2, 4, 8, 8)
    with pytest.raises(fxprune.InputError, match="concrete_args: Branching.forward has no argument 'flags'"):
        fxprune.compress(model, x, concrete_args={"flags": True})
