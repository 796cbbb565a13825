"""Hugging Face transformers models, built from small configs with random weights (nothing downloaded),
compressed whole by ``capture="export"`` from the dict batches their tokenizers give."""

import pytest
import torch
import torch.nn as nn
from helpers import compress_checked, parameter_count

import fxprune
from fxprune.analysis.analyze import analyze_graph
from fxprune.analysis.sites import group_sites
from fxprune.choose.criteria.reconstruction import _consumer_inputs, _energies
from fxprune.graph.inputs import IGNORED_TARGET, Inputs, as_batches, example_inputs
from fxprune.graph.language import is_causal_lm, with_next_token_targets
from fxprune.pipeline import traced

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install transformers)")


class ChannelAffine(nn.Module):
    """A per-channel affine map in LayerNorm's place: channels stay apart, so the oracle is exact. Over
    dim 1 for ConvNeXt's channels-first LayerNorm, else over the last dim."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        self.weight, self.bias = nn.Parameter(norm.weight.detach().clone()), nn.Parameter(norm.bias.detach().clone())
        self.channels_first = getattr(norm, "data_format", None) == "channels_first"

    def forward(self, x):
        if self.channels_first:
            return x * self.weight[:, None, None] + self.bias[:, None, None]
        return x * self.weight + self.bias


class ChannelScale(nn.Module):
    """A per-channel scale in an RMSNorm's place (the norm's weight alone), for the same reason."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.weight = nn.Parameter(norm.weight.detach().clone())

    def forward(self, x):
        return x * self.weight


def without_layer_norms(model: nn.Module) -> nn.Module:
    """Every LayerNorm and RMSNorm (``nn.RMSNorm`` or a model's own, like ``LlamaRMSNorm``) replaced by a
    per-channel map."""
    for name, module in list(model.named_modules()):
        owner, _, attr = name.rpartition(".")
        if isinstance(module, nn.LayerNorm):
            setattr(model.get_submodule(owner), attr, ChannelAffine(module))
        elif isinstance(module, nn.RMSNorm) or type(module).__name__.endswith("RMSNorm"):
            setattr(model.get_submodule(owner), attr, ChannelScale(module))
    return model


def bert(seed=0, head="BertForSequenceClassification", labels=3):
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64, num_labels=labels)
    return getattr(transformers, head)(config).eval()


def tokens(batch=2, length=8, vocab=100, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length - 3:] = 0  # padding in the last sequence
    return {"input_ids": ids, "attention_mask": mask}


def embedding_tables(model: nn.Module, original: nn.Module | None = None) -> int:
    """Parameters of the embedding tables of ``original`` (the model itself by default), read by name from
    ``model`` (a pruned GraphModule has no ``nn.Embedding`` modules, and may hold a tied table under the
    name of the head that shares it); a tied head is not counted again."""
    original = original or model
    names = {id(p): [] for m in original.modules() if isinstance(m, nn.Embedding) for p in [m.weight]}
    for name, p in original.named_parameters(remove_duplicate=False):
        if id(p) in names:
            names[id(p)].append(name)
    held = dict(model.named_parameters())
    return sum(next(held[n] for n in aliases if n in held).numel() for aliases in names.values())


def outside_embeddings(model: nn.Module, original: nn.Module | None = None) -> int:
    return parameter_count(model) - embedding_tables(model, original)


def test_bert_compresses_from_a_dict_batch_and_returns_its_output_type():
    model, batch = bert(), tokens()
    small = fxprune.compress(model, batch, ratio=0.5, capture="export")
    out = small(**batch)
    assert type(out).__name__ == "SequenceClassifierOutput" and out.logits.shape == (2, 3)
    before, after = outside_embeddings(model), outside_embeddings(small, model)
    assert before / after >= 1.8, (before, after)
    longer = tokens(batch=3, length=13, seed=1)  # another batch size and sequence length
    assert small(**longer).logits.shape == (3, 3)
    assert fxprune.compress(model, batch, ratio=0.5).fxprune_plan.groups  # "auto" takes a dict batch too


def test_bert_without_layer_norms_equals_the_masked_original():
    model = without_layer_norms(bert()).double()
    batch = tokens()
    inputs = Inputs(batch.values(), batch.keys())
    small, analysis, plan, result = compress_checked(model, inputs, ratio=0.5)
    assert result.exact and result.relative < 1e-6
    assert parameter_count(small) < parameter_count(model)


def test_a_dict_batch_with_targets_and_the_fx_capture_refusal():
    model, batch = bert(), tokens()
    labels = torch.tensor([0, 2])
    small = fxprune.compress(model, [(batch, labels), (tokens(seed=1), labels)], ratio=0.5, capture="export")
    assert small(**batch).logits.shape == (2, 3)
    with pytest.raises(fxprune.InputError, match="capture='export'"):
        fxprune.compress(model, batch, capture="fx")


def test_a_tokenizer_batch_encoding_is_a_dict_batch():
    model, batch = bert(), transformers.BatchEncoding(tokens())
    small = fxprune.compress(model, batch, ratio=0.5)
    assert small(**batch).logits.shape == (2, 3)


def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, use_cache=False)
    return transformers.GPT2LMHeadModel(config).eval()


def vit():
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64, num_labels=3)
    return transformers.ViTForImageClassification(config).eval()


def test_gpt2_compresses_through_its_conv1d_layers_and_gelu_new():
    model, batch = gpt2(), tokens()
    small = fxprune.compress(model, batch, ratio=0.5)
    out = small(**batch)
    assert type(out).__name__ == "CausalLMOutputWithCrossAttentions" and out.logits.shape == (2, 8, 100)
    before, after = outside_embeddings(model), outside_embeddings(small, model)
    assert before / after >= 1.8, (before, after)
    assert small(**tokens(batch=3, length=11, seed=1)).logits.shape == (3, 11, 100)


def test_vit_compresses_its_stream_heads_and_mlp():
    model, pixels = vit(), {"pixel_values": torch.randn(2, 3, 32, 32)}
    small = fxprune.compress(model, pixels, ratio=0.5)
    out = small(**pixels)
    assert type(out).__name__ == "ImageClassifierOutput" and out.logits.shape == (2, 3)
    assert parameter_count(model) / parameter_count(small) >= 1.8
    assert small(torch.randn(5, 3, 32, 32)).logits.shape == (5, 3)


def hf_resnet():
    torch.manual_seed(0)
    config = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 64], depths=[1, 1, 1, 1],
                                       num_labels=3)
    return transformers.ResNetForImageClassification(config).eval()


def convnext():
    torch.manual_seed(0)
    config = transformers.ConvNextConfig(hidden_sizes=[16, 32, 64, 64], depths=[1, 1, 1, 1], num_labels=3)
    return transformers.ConvNextForImageClassification(config).eval()


@pytest.mark.parametrize("make", [hf_resnet, convnext], ids=["resnet", "convnext"])
def test_convolutional_image_classifiers_compress_and_return_their_output_type(make):
    model, pixels = make(), {"pixel_values": torch.randn(2, 3, 64, 64)}
    small = fxprune.compress(model, pixels, ratio=0.5)
    out = small(**pixels)
    assert type(out).__name__ == "ImageClassifierOutputWithNoAttention" and out.logits.shape == (2, 3)
    assert parameter_count(model) / parameter_count(small) >= 1.8
    assert small(torch.randn(3, 3, 64, 64)).logits.shape == (3, 3)


def llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      use_cache=False)
    return transformers.LlamaForCausalLM(config).eval()


def test_llama_prunes_rotary_head_widths_in_pairs_and_the_hidden_size_through_its_rms_norms():
    model, batch = llama(), tokens()
    report = fxprune.analyze(model, batch)
    assert len(report.analysis.mixing_norms) == 5  # two RMSNorms a layer and the last: written out, recognised
    small = fxprune.compress(model, batch, ratio=0.5, round_to=1)
    assert type(small(**batch)).__name__ == "CausalLMOutputWithPast"
    attention = "model.layers.0.self_attn."
    # head width 8 -> 4: rotate_half pairs index i with i + 4, so pairs go together, with their frequency
    assert small.get_parameter(attention + "q_proj.weight").shape == (4 * 4, 16)
    assert small.get_parameter(attention + "k_proj.weight").shape == (2 * 4, 16)  # 2 key/value heads (GQA)
    assert small.get_buffer("model.rotary_emb.inv_freq").shape == (2,)
    assert small.get_parameter("model.layers.0.mlp.gate_proj.weight").shape == (32, 16)
    # the hidden size, 32 -> 16, across the embeddings, every norm and the head
    assert small.get_parameter("model.embed_tokens.weight").shape == (100, 16)
    assert small.get_parameter("model.norm.weight").shape == (16,)
    assert small.get_parameter("lm_head.weight").shape == (100, 16)
    before, after = outside_embeddings(model), outside_embeddings(small, model)
    assert before / after >= 1.8, (before, after)
    assert small(**tokens(batch=3, length=12, seed=1)).logits.shape == (3, 12, 100)


IMAGES = {vit: 32, hf_resnet: 64, convnext: 64}  # the image size of each image model; the rest take tokens


def example_batch(make, dtype=torch.float32) -> dict:
    size = IMAGES.get(make)
    return tokens() if size is None else {"pixel_values": torch.randn(2, 3, size, size, dtype=dtype)}


def test_a_causal_lm_with_its_default_cache_is_pruned_and_returns_its_logits_without_a_cache():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model, batch = transformers.LlamaForCausalLM(config).eval(), tokens()
    assert model.config.use_cache and model(**batch).past_key_values is not None
    small = fxprune.compress(model, batch, ratio=0.5)
    out = small(**batch)
    assert out.logits.shape == (2, 8, 100) and out.past_key_values is None
    assert small.get_parameter("model.layers.0.self_attn.k_proj.weight").shape[0] < 16  # head widths pruned
    assert model.config.use_cache  # the user's config as it was


@pytest.mark.parametrize("make", [gpt2, vit, llama, hf_resnet, convnext],
                         ids=["gpt2", "vit", "llama", "resnet", "convnext"])
def test_without_layer_norms_the_pruned_model_equals_the_masked_original(make):
    model = without_layer_norms(make()).double()
    batch = example_batch(make, torch.float64)
    small, analysis, plan, result = compress_checked(model, Inputs(batch.values(), batch.keys()), ratio=0.5)
    assert result.exact and result.relative < 1e-6
    assert parameter_count(small) < 0.7 * parameter_count(model)


@pytest.mark.parametrize("make", [bert, gpt2, llama, vit, convnext], ids=["bert", "gpt2", "llama", "vit", "convnext"])
def test_a_pruned_model_exports_to_onnx_with_parity(make, tmp_path):
    model, batch = make(), example_batch(make)
    small = fxprune.compress(model, batch, ratio=0.5)
    result = fxprune.export_onnx(small, tuple(batch.values()), tmp_path / "small.onnx")
    assert result.relative <= result.tolerance


def test_a_compressed_bert_saves_and_loads_from_its_recorded_dict_of_inputs(tmp_path):
    model, batch = bert(), tokens()
    small = fxprune.compress(model, batch, ratio=0.5)
    assert [spec["name"] for spec in small.fxprune_input_specs] == ["input_ids", "attention_mask"]
    fxprune.save(small, tmp_path / "bert.fxprune")
    again = fxprune.load(tmp_path / "bert.fxprune", bert(seed=1))  # rebuilt from zeros of one row
    torch.testing.assert_close(again(**batch).logits, small(**batch).logits)
    assert again(**tokens(batch=3, length=10)).logits.shape == (3, 3)


def test_bert_scores_by_taylor_and_fine_tunes_from_dict_batches():
    """Criteria and fine-tuning read the logits of a ``ModelOutput`` and call the models by keyword."""
    model, batch = bert(), tokens(batch=4)
    labels = torch.tensor([0, 1, 2, 1])
    small = fxprune.compress(model, (batch, labels), ratio=0.5, method="taylor", capture="export")
    assert small.fxprune_plan.removed_channels > 0
    tuned = fxprune.finetune(small, [(batch, labels)], teacher=model, epochs=2, progress=False)
    first, last = tuned.fxprune_finetune_log
    assert last < first and tuned(**batch).logits.shape == (4, 3)


def test_reconstruction_measures_an_exported_graphs_linear_inputs_over_batches_of_two_lengths():
    """Token batches of different sequence lengths are measured batch by batch, and the layers of an
    exported graph (``aten.linear`` on weights read by name) are measured, not ranked by weight alone."""
    model, labels = bert(), torch.tensor([0, 2])
    data = [(tokens(length=8), labels), (tokens(length=12, seed=1), labels)]
    small = fxprune.compress(model, data, ratio=0.5, method="reconstruction")
    assert small.fxprune_plan.removed_channels > 0 and small(**tokens(length=5)).logits.shape == (2, 3)
    batches = as_batches(data)
    gm = traced(model, example_inputs(batches), given=batches[0].inputs)
    analysis = analyze_graph(gm)
    sites = group_sites(analysis)
    inputs = _consumer_inputs(analysis, sites, batches)
    assert {len(xs) for xs in inputs.values()} == {2}  # one tensor per batch, each of its own length
    read_by_layers = [site for site in sites if site.consumers]  # query/key widths are read by attention alone
    assert len(read_by_layers) >= 6 and all(_energies(analysis, site, inputs)[0].sum() > 0 for site in read_by_layers)



def bert_tokens_classifier():
    return bert(head="BertForTokenClassification", labels=5)


def test_a_causal_lm_batch_without_labels_is_labelled_by_its_next_tokens():
    batch = as_batches(tokens(batch=2, length=6))[0]
    labelled = with_next_token_targets(batch)
    ids, mask = batch.kwargs["input_ids"], batch.kwargs["attention_mask"]
    assert labelled.targets.shape == ids.shape
    assert torch.equal(labelled.targets[0, :-1], ids[0, 1:]) and labelled.targets[0, -1] == IGNORED_TARGET
    assert (labelled.targets[1][:-1][mask[1, 1:] == 0] == IGNORED_TARGET).all()  # padding predicts nothing
    assert is_causal_lm(gpt2()) and is_causal_lm(llama()) and not is_causal_lm(bert())


@pytest.mark.parametrize("make", [gpt2, llama, bert_tokens_classifier], ids=["gpt2", "llama", "bert-tokens"])
def test_mlacp_with_all_three_losses_prunes_language_models_and_token_classifiers(make):
    """Logits (batch, tokens, classes) are read a row per token; a linear layer's Gram is taken over its
    last dim; the labels are per token (given, or the next tokens of a causal LM's text)."""
    model = make()
    batches = [tokens(batch=4, length=8, seed=i) for i in range(2)]
    if make is bert_tokens_classifier:
        batches = [(batch, torch.randint(0, 5, (4, 8), generator=torch.Generator().manual_seed(i)))
                   for i, batch in enumerate(batches)]
    method = fxprune.MLACP(terms=("reconstruction", "gram", "classification"), steps=2, progress=False)
    small = fxprune.compress(model, batches, ratio=0.5, method=method, round_to=1)
    assert small.fxprune_plan.removed_channels > 0 and len(small.fxprune_log) > 0
    assert all(record.loss_refined <= record.loss_pruned for record in small.fxprune_log)
    assert small(**tokens(batch=3, length=8)).logits.shape == model(**tokens(batch=3, length=8)).logits.shape


def test_a_linear_layer_on_tokens_is_judged_over_its_last_dim():
    gm = traced(bert_tokens_classifier(), example_inputs(as_batches(tokens())), capture="export")
    sites = group_sites(analyze_graph(gm))
    dims = {dim for site in sites for dim in site.channel_dims.values()}
    assert dims == {2}, dims  # (batch, tokens, channels): every consumer is a linear layer
