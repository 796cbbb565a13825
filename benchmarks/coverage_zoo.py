"""Model zoos: one model of every timm family, a dozen Hugging Face transformers, two Ultralytics YOLOs.

Each model gets random weights (``helpers.randomize``: no output is trivially zero) and is compressed at
ratio 0.5 in float64 through ``helpers.compress_checked`` (the oracle: the pruned model equals the original
with the removed channels zeroed; shapes only where a norm mixes pruned channels), then sorted into:

* ``pruned``: channels removed and the oracle holds;
* ``frozen``: it compressed, but every channel is frozen, each group with a reason;
* ``refused``: fxprune raised one of its own errors (``FxpruneError``), with a message;
* ``failed``: anything else (a bug, a broken oracle, the time limit).

Each row also says which capture was used (FX or ``torch.export``), params and MACs before and after,
whether the pruned model runs at another batch size, the main frozen reasons, and the fxprune commit it
measured (``+``: with uncommitted changes under fxprune/). Torch-Pruning 1.6.1
prunes a fresh float32 copy of the same model side by side: ``MetaPruner`` with L1 ``MagnitudeImportance``,
ratio 0.5, ``round_to=None``, the output layers ignored (the classifier found as ``torch_pruning_peer``
finds it; for transformers the layers as wide as the logits; for YOLO the detect head's last convolutions
and its DFL), attention heads kept whole where the module says how many (``nn.MultiheadAttention``,
timm's ``qkv`` attention). Its status: ``ok`` (the model still runs on the example and at another batch
size with outputs of the same shapes), ``unpruned`` (the same, with nothing removed), ``wrong`` (it runs, but
shapes differ), ``crashed``, ``timeout`` (over ``TP_LIMIT_S``: its dependency search that does not end, on
Llama-like decoders, YOLO11 and a dozen timm families) or ``skipped`` (fxprune took over ``TP_AFTER_S``).

A timm family is a timm model module; its model (the one with the fewest parameters, ``test_*`` models
left out) and input size (the smallest of ``SIZES`` it runs at, with ``img_size=`` where the model needs it)
are fixed in ``TIMM``; ``--rechoose`` picks them again from the installed timm and prints the mapping to paste.

    python benchmarks/coverage_zoo.py                                   # every zoo (about 30 minutes, 1 thread)
    python benchmarks/coverage_zoo.py --zoos transformers ultralytics   # some zoos
    python benchmarks/coverage_zoo.py resnet vit_tiny_patch16_224 bert  # a few, by family or model name
    python benchmarks/coverage_zoo.py --rechoose                        # print a new TIMM mapping, run nothing
    nohup python benchmarks/coverage_zoo.py > /tmp/coverage_zoo.log 2>&1 &

Results: ``results/coverage_zoo.json`` and ``.md``; a partial run replaces only its own rows.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import os
import re
import signal
import subprocess
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch_pruning_peer as peer
from harness import RESULTS, markdown_table, use_test_support, write_result

use_test_support()
from helpers import compress_checked, parameter_count, randomize  # noqa: E402

import fxprune  # noqa: E402
from fxprune.graph.inputs import Inputs  # noqa: E402
from fxprune.graph.measure import count_macs  # noqa: E402

os.environ.setdefault("YOLO_OFFLINE", "1")  # Ultralytics: no downloads, no network checks

ZOOS = ("timm", "transformers", "ultralytics")
STATUSES = ("pruned", "frozen", "refused", "failed")
TP_STATUSES = ("ok", "unpruned", "wrong", "crashed", "timeout", "skipped")
SIZES = (64, 96, 128, 160, 192, 224, 256)
BATCH, OTHER_BATCH = 2, 3
FXPRUNE_LIMIT_S = 600  # one model's fxprune run, then it counts as failed
TP_AFTER_S = 120  # Torch-Pruning is skipped where fxprune took longer
TP_LIMIT_S = 60  # its dependency search ends within seconds on these models, or not at all
LOW_PARAMS_X = 1.3

# timm family (module): (model, input size, img_size= passed at creation), chosen by --rechoose
TIMM = {
    'beit': ('beit_base_patch16_224', 64, True),  # 85.77M
    'byoanet': ('halonet_h1', 256, False),  # 7.59M
    'byobnet': ('mobileone_s1', 64, False),  # 3.56M
    'cait': ('cait_xxs24_224', 64, True),  # 11.77M
    'coat': ('coat_tiny', 64, True),  # 5.35M
    'convit': ('convit_tiny', 64, True),  # 5.52M
    'convmixer': ('convmixer_768_32', 64, False),  # 20.35M
    'convnext': ('convnext_zepto_rms', 64, False),  # 1.90M
    'cpubone': ('cpubone_nano', 64, False),  # 4.93M
    'crossvit': ('crossvit_tiny_240', 64, False),  # 6.73M
    'csatv2': ('csatv2', 64, False),  # 10.72M
    'cspnet': ('cs3darknet_focus_s', 64, False),  # 2.77M
    'cspnext': ('cspnext_tiny', 64, False),  # 2.35M
    'davit': ('davit_tiny', 64, False),  # 27.60M
    'deepseek_vit': ('deepseek_vit_412m', 224, False),  # 411.85M
    'deit': ('deit_tiny_patch16_224', 64, True),  # 5.53M
    'densenet': ('densenet121', 64, False),  # 6.96M
    'dla': ('dla46x_c', 64, False),  # 0.81M
    'dpn': ('dpn48b', 64, False),  # 8.30M
    'edgenext': ('edgenext_xx_small', 64, False),  # 1.16M
    'efficientformer': ('efficientformer_l1', 224, False),  # 11.40M
    'efficientformer_v2': ('efficientformerv2_s0', 64, True),  # 3.25M
    'efficientnet': ('mobilenetv2_035', 64, False),  # 0.41M
    'efficientvim': ('efficientvim_m1', 64, False),  # 5.73M
    'efficientvit_mit': ('efficientvit_b0', 64, False),  # 2.14M
    'efficientvit_msra': ('efficientvit_m0', 64, False),  # 2.16M
    'eva': ('vit_tiny_patch16_dinov3_qkvb', 64, False),  # 5.49M
    'fasternet': ('fasternet_t0', 64, False),  # 2.64M
    'fastvit': ('fastvit_t8', 64, False),  # 3.26M
    'focalnet': ('focalnet_tiny_srf', 64, False),  # 27.67M
    'gcvit': ('gcvit_xxtiny', 64, True),  # 11.49M
    'gemma4_vit': ('gemma4_vit_167m_enc', 96, False),  # 167.36M
    'ghostnet': ('ghostnet_050', 64, False),  # 1.32M
    'hardcorenas': ('hardcorenas_b', 64, False),  # 3.91M
    'hgnet': ('hgnetv2_b0', 64, False),  # 3.97M
    'hiera': ('hiera_tiny_224', 64, True),  # 27.15M
    'hieradet_sam2': ('sam2_hiera_tiny', 64, False),  # 26.86M
    'hrnet': ('hrnet_w18_small', 64, False),  # 11.16M
    'iformer': ('iformer_t', 64, False),  # 2.63M
    'inception_next': ('inception_next_atto', 64, False),  # 3.21M
    'inception_resnet_v2': ('inception_resnet_v2', 96, False),  # 54.32M
    'inception_v3': ('inception_v3', 96, False),  # 21.81M
    'inception_v4': ('inception_v4', 96, False),  # 41.16M
    'lcnetv2': ('lcnetv2_small', 64, False),  # 2.86M
    'levit': ('levit_128s', 64, True),  # 7.01M
    'lowformer': ('lowformer_b0', 64, False),  # 12.52M
    'mambaout': ('mambaout_femto', 64, False),  # 6.16M
    'maxxvit': ('maxvit_pico_rw_256', 64, True),  # 7.20M
    'metaformer': ('poolformerv2_s12', 64, False),  # 11.38M
    'mlp_mixer': ('gmlp_ti16_224', 64, True),  # 5.74M
    'mobilenetv3': ('lcnet_035', 64, False),  # 0.38M
    'mobilenetv5': ('mobilenetv5_base', 64, False),  # 80.62M
    'mobilevit': ('mobilevit_xxs', 64, False),  # 0.95M
    'mvitv2': ('mvitv2_tiny', 64, False),  # 23.41M
    'naflexvit': ('naflexvit_base_patch16_parfac_gap', 64, False),  # 85.70M
    'nasnet': ('nasnetalarge', 64, False),  # 84.76M
    'nest': ('nest_tiny', 64, True),  # 16.68M
    'nextvit': ('nextvit_small', 64, False),  # 30.75M
    'nfnet': ('nf_regnet_b0', 64, False),  # 7.81M
    'pit': ('pit_ti_224', 64, True),  # 4.59M
    'pnasnet': ('pnasnet5large', 64, False),  # 81.78M
    'pvt_v2': ('pvt_v2_b0', 64, False),  # 3.41M
    'qwen3_vit': ('qwen3_vit_88m', 64, False),  # 87.42M
    'rdnet': ('rdnet_tiny', 64, False),  # 22.83M
    'regnet': ('regnetx_002', 64, False),  # 2.32M
    'repghost': ('repghostnet_050', 64, False),  # 1.05M
    'repvit': ('repvit_m1', 64, False),  # 4.72M
    'res2net': ('res2next50', 64, False),  # 22.64M
    'resnest': ('resnest14d', 64, False),  # 8.58M
    'resnet': ('resnet10t', 64, False),  # 4.93M
    'resnetv2': ('resnetv2_18', 64, False),  # 11.18M
    'rexnet': ('rexnet_100', 64, False),  # 3.53M
    'selecsls': ('selecsls42', 64, False),  # 29.09M
    'senet': ('legacy_seresnet18', 64, False),  # 11.27M
    'sequencer': ('sequencer2d_s', 64, False),  # 27.27M
    'shvit': ('shvit_s1', 64, False),  # 6.01M
    'sknet': ('skresnet18', 64, False),  # 11.45M
    'starnet': ('starnet_s050', 64, False),  # 0.42M
    'swiftformer': ('swiftformer_xs', 64, False),  # 3.04M
    'swin_transformer': ('swin_tiny_patch4_window7_224', 64, True),  # 27.53M
    'swin_transformer_v2': ('swinv2_tiny_window8_256', 64, True),  # 27.59M
    'swin_transformer_v2_cr': ('swinv2_cr_tiny_224', 64, True),  # 27.57M
    'tiny_vit': ('tiny_vit_5m_224', 64, False),  # 5.07M
    'tnt': ('tnt_s_legacy_patch16_224', 64, True),  # 23.37M
    'tresnet': ('tresnet_m', 64, False),  # 29.36M
    'twins': ('twins_svt_small', 64, False),  # 23.55M
    'vgg': ('vgg11', 64, False),  # 128.81M
    'visformer': ('visformer_tiny', 64, True),  # 9.94M
    'vision_transformer': ('vit_tiny_patch16_224', 64, True),  # 5.53M
    'vision_transformer_hybrid': ('vit_tiny_r_s16_p8_224', 64, True),  # 6.15M
    'vision_transformer_relpos': ('vit_srelpos_small_patch16_224', 64, True),  # 21.59M
    'vision_transformer_sam': ('samvit_base_patch16_224', 64, False),  # 85.70M
    'vitamin': ('vitamin_small_224', 64, True),  # 21.88M
    'volo': ('volo_d1_224', 64, True),  # 25.87M
    'vovnet': ('ese_vovnet19b_slim_dw', 64, False),  # 1.39M
    'xception': ('legacy_xception', 64, False),  # 20.83M
    'xception_aligned': ('xception41p', 64, False),  # 24.88M
    'xcit': ('xcit_nano_12_p8_224', 64, False),  # 2.92M
}


# --------------------------------------------------------------------------- the models


@dataclass
class Case:
    zoo: str
    family: str
    model: str
    build: Callable[[], nn.Module]  # a fresh float32 model with random weights, in eval mode
    batch: Callable[[int], torch.Tensor | dict]  # inputs of that batch size (a dict: keyword inputs)
    keep: Callable[[nn.Module, object], list[nn.Module]]  # the layers Torch-Pruning leaves whole
    shape: str = ""


def _seeded(make: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build():
        torch.manual_seed(0)
        return randomize(make())

    return build


def _images(size: int) -> Callable[[int], torch.Tensor]:
    return lambda n: torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n))


def _timm_case(family: str, name: str, size: int, img_size: bool) -> Case:
    import timm

    kwargs = {"img_size": size} if img_size else {}
    make = lambda: timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()
    return Case("timm", family, name, _seeded(make), _images(size), peer.output_layers,
                f"{size}x{size}" + (" img_size" if img_size else ""))


def _tokens(n: int, length: int = 8, vocab: int = 100) -> dict:
    ids = torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(n))
    mask = torch.ones(n, length, dtype=torch.long)
    mask[-1, length - 3:] = 0  # padding in the last sequence
    return {"input_ids": ids, "attention_mask": mask}


def _pixels(size: int) -> Callable[[int], dict]:
    return lambda n: {"pixel_values": _images(size)(n)}


TEXT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64)
TOKEN_IDS = dict(bos_token_id=1, eos_token_id=2)  # within the small vocabulary
DECODER = dict(TEXT, num_key_value_heads=2, use_cache=False, **TOKEN_IDS)
VISION = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64)

# family: (config class, model class, config, inputs); classifiers get num_labels=3
HF = {
    "bert": ("BertConfig", "BertForSequenceClassification", TEXT, _tokens),
    "distilbert": ("DistilBertConfig", "DistilBertForSequenceClassification",
                   dict(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64),
                   _tokens),
    "roberta": ("RobertaConfig", "RobertaForSequenceClassification", TEXT, _tokens),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                   use_cache=False, **TOKEN_IDS), _tokens),
    "llama": ("LlamaConfig", "LlamaForCausalLM", DECODER, _tokens),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", DECODER, _tokens),
    "mistral": ("MistralConfig", "MistralForCausalLM", DECODER, _tokens),
    "vit": ("ViTConfig", "ViTForImageClassification", VISION, _pixels(32)),
    "deit": ("DeiTConfig", "DeiTForImageClassification", VISION, _pixels(32)),
    "swin": ("SwinConfig", "SwinForImageClassification",
             dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4),
             _pixels(32)),
    "resnet": ("ResNetConfig", "ResNetForImageClassification",
               dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic"), _pixels(32)),
    "convnext": ("ConvNextConfig", "ConvNextForImageClassification",
                 dict(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1]), _pixels(32)),
    "mobilevit": ("MobileViTConfig", "MobileViTForImageClassification",
                  dict(image_size=64, hidden_sizes=[32, 32, 32], neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 32],
                       num_attention_heads=2), _pixels(64)),
}


def _logit_layers(model: nn.Module, batch) -> list[nn.Module]:
    """The layers as wide as the logits (the classifier, the LM head)."""
    with torch.no_grad():
        width = _call(model, batch).logits.shape[-1]
    return [m for m in model.modules() if getattr(m, "out_features", None) == width]


def _hf_case(family: str) -> Case:
    import transformers

    config_name, model_name, config, batch = HF[family]
    classifier = "Classification" in model_name
    config = getattr(transformers, config_name)(**config, **({"num_labels": 3} if classifier else {}))
    make = lambda: getattr(transformers, model_name)(config).eval()
    shape = "tokens 2x8" if batch is _tokens else "pixels {0}x{0}".format(batch(1)["pixel_values"].shape[-1])
    return Case("transformers", family, model_name, _seeded(make), batch, _logit_layers, shape)


YOLO = ("yolov8n.yaml", "yolo11n.yaml")


def _detect_outputs(model: nn.Module, batch) -> list[nn.Module]:
    """The detect head's last convolutions (boxes, classes) and its DFL."""
    detect = model.model[-1]
    return [seq[-1] for seq in (*detect.cv2, *detect.cv3)] + ([detect.dfl] if hasattr(detect, "dfl") else [])


def _yolo_case(config: str) -> Case:
    from ultralytics.nn.tasks import DetectionModel

    make = lambda: DetectionModel(config, verbose=False).eval()
    return Case("ultralytics", "yolo", config.removesuffix(".yaml"), _seeded(make), _images(64), _detect_outputs,
                "64x64")


# --------------------------------------------------------------------------- choosing the timm models


def _timm_model(name: str, size: int | None = None, device: str = "meta") -> nn.Module:
    import timm

    with torch.device(device):
        return timm.create_model(name, pretrained=False, num_classes=10,
                                 **({"img_size": size} if size else {})).eval()


def _runs_at(name: str, size: int, img_size: bool, device: str) -> bool:
    try:
        model = _timm_model(name, size if img_size else None, device)
        with torch.no_grad(), torch.device(device):
            model(torch.randn(BATCH, 3, size, size))
        return True
    except Exception:  # noqa: BLE001 — any failure means: not at this size
        return False


def _smallest_size(name: str) -> tuple[int, bool] | None:
    """The smallest of ``SIZES`` (or the model's default) it runs at, without ``img_size=`` if it can;
    checked on the meta device, then for real where no size ran there (ops without meta kernels)."""
    import timm

    default = timm.get_pretrained_cfg(name).input_size[-1] if timm.get_pretrained_cfg(name) else 224
    sizes = sorted({s for s in SIZES if s <= default} | {default})
    for device in ("meta", "cpu"):
        for size in sizes:
            for img_size in (False, True):
                if _runs_at(name, size, img_size, device):
                    return size, img_size
    return None


def choose_timm(candidates: int = 4) -> dict:
    """Per timm module, its model with the fewest parameters that runs, and the smallest size it runs at."""
    import timm

    chosen = {}
    for family in timm.list_modules():
        counts = {}
        for name in timm.list_models(module=family):
            if not name.startswith("test_"):
                with contextlib.suppress(Exception):
                    counts[name] = parameter_count(_timm_model(name))
        for name in sorted(counts, key=counts.get)[:candidates]:
            fit = _smallest_size(name)
            if fit is not None:
                chosen[family] = (name, *fit)
                print(f"    {family!r}: {chosen[family]!r},  # {counts[name] / 1e6:.2f}M", flush=True)
                break
    return chosen


# --------------------------------------------------------------------------- one model


class _ByName(nn.Module):
    """Calls the model with its keyword inputs, for ``count_macs`` (which passes inputs positionally)."""

    def __init__(self, model: nn.Module, keywords: tuple[str, ...]):
        super().__init__()
        self.model, self.keywords = model, keywords

    def forward(self, *values):
        return self.model(**dict(zip(self.keywords, values)))


def _call(model: nn.Module, batch):
    with torch.no_grad():
        return model(**batch) if isinstance(batch, dict) else model(batch)


def _inputs(batch) -> tuple:
    """The oracle's inputs, in float64: a tensor's 1-tuple, or a dict batch as ``Inputs`` (named)."""
    double = lambda t: t.double() if t.is_floating_point() else t
    if isinstance(batch, dict):
        return Inputs([double(v) for v in batch.values()], batch.keys())
    return (double(batch),)


def _macs(model: nn.Module, inputs: tuple, row: dict) -> int:
    """``count_macs``; where it fails (torch's module tracker on a parameter handed to a submodule under
    ``no_grad``: cait, pit), counted again with gradients off, and the failure noted in the row."""
    keywords = getattr(inputs, "keywords", ())
    counted = _ByName(model, keywords) if keywords else model
    try:
        return count_macs(counted, tuple(inputs))
    except AssertionError as error:
        row["macs_note"] = f"count_macs fails with requires_grad on: {_error(error)}"
        flags = [(p, p.requires_grad) for p in model.parameters()]
        model.requires_grad_(False)
        try:
            return count_macs(counted, tuple(inputs))
        finally:
            for param, flag in flags:
                param.requires_grad_(flag)


def _structure(output):
    """An output's nesting with tensor shapes (what must survive pruning)."""
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, dict):
        return {key: _structure(value) for key, value in output.items()}
    if isinstance(output, (tuple, list)):
        return type(output).__name__, [_structure(value) for value in output]
    return type(output).__name__


def _short(reason: str) -> str:
    """A frozen reason without the node or tensor it names: ``no rule for function aten.gather.default``."""
    reason = reason.split(": ", 1)[-1].split(" (node")[0].split(" at node")[0].replace("torch._ops.aten.", "aten.")
    return re.sub(r"^node \S+ \((.*?)\) ", r"\1 ", reason)


def _frozen_reasons(analysis, most: int = 5) -> list[str]:
    """Distinct reasons, most channels first; the graph's own inputs and outputs last (always frozen)."""
    counts = collections.Counter()
    for group in analysis.frozen:
        counts[_short(group.reason)] += group.size
    graph_ends = lambda reason: reason.startswith(("output of the graph", "input of the graph"))
    ranked = sorted(counts.items(), key=lambda item: (graph_ends(item[0]), -item[1]))
    return [f"{reason} ({n} ch)" for reason, n in ranked[:most]]


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:400]}".replace("\n", " ")


class Timeout(BaseException):
    """Over a time limit: a ``BaseException``, so no ``except Exception`` in the code it stops swallows it."""


@contextlib.contextmanager
def _time_limit(seconds: int):
    def expire(signum, frame):
        raise Timeout(f"over the {seconds} s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_fxprune(case: Case) -> dict:
    start = time.perf_counter()
    row = {}
    try:
        with _time_limit(FXPRUNE_LIMIT_S):
            model = case.build().double()
            inputs = _inputs(case.batch(BATCH))
            row.update(params_before=parameter_count(model), macs_before=_macs(model, inputs, row))
            small, analysis, plan, result = compress_checked(model, inputs, ratio=0.5, expect_removed=False)
            row.update(status="pruned" if plan.removed_channels else "frozen",
                       capture=analysis.gm.meta.get("fxprune_capture", "fx"),
                       params_after=parameter_count(small), macs_after=_macs(small, inputs, row))
            row.update(params_x=round(row["params_before"] / row["params_after"], 2),
                       macs_x=round(row["macs_before"] / max(row["macs_after"], 1), 2),
                       oracle="exact" if result.exact else "shapes", rel_diff=float(f"{result.relative:.1e}"),
                       groups=len(analysis.groups), frozen_groups=len(analysis.frozen),
                       frozen_share=round(sum(g.size for g in analysis.frozen)
                                          / max(1, sum(g.size for g in analysis.frozen + analysis.groups)), 2),
                       frozen_reasons=_frozen_reasons(analysis))
            row["other_batch"] = _other_batch(model, small, case)
    except fxprune.FxpruneError as error:
        row.update(status="refused", error=_error(error))
    except (Exception, Timeout) as error:  # noqa: BLE001 — a benchmark reports every failure and goes on
        row.update(status="failed", error=_error(error), where=traceback.format_exc(limit=-3)[-800:])
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def _other_batch(model: nn.Module, small: nn.Module, case: Case) -> str:
    """Whether the pruned model runs at another batch size, with outputs shaped as the original's."""
    inputs = _inputs(case.batch(OTHER_BATCH))
    try:
        with torch.no_grad():
            got = _structure(small(*inputs.args, **inputs.kwargs) if isinstance(inputs, Inputs) else small(*inputs))
            want = _structure(_call(model, dict(inputs.kwargs) if isinstance(inputs, Inputs) else inputs[0]))
        return "ok" if got == want else f"shapes differ: {got} vs {want}"[:300]
    except Exception as error:  # noqa: BLE001
        return _error(error)[:300]


def _heads(model: nn.Module) -> dict[nn.Module, int]:
    """Attention layers whose heads Torch-Pruning keeps whole: ``nn.MultiheadAttention`` and timm's qkv."""
    heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    for module in model.modules():
        if isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(getattr(module, "num_heads", None), int):
            heads[module.qkv] = module.num_heads
    return heads


def _fix_head_dims(model: nn.Module) -> None:
    """timm's attention reads ``head_dim`` and ``attn_dim`` for its reshapes; Torch-Pruning shrinks the layers only."""
    for module in model.modules():
        qkv = getattr(module, "qkv", None)
        if isinstance(qkv, nn.Linear) and isinstance(getattr(module, "head_dim", None), int):
            module.head_dim = qkv.out_features // (3 * module.num_heads)
            if isinstance(getattr(module, "attn_dim", None), int):
                module.attn_dim = module.head_dim * module.num_heads


def tp_prune(model: nn.Module, batch, ignored: list[nn.Module]) -> None:
    """Torch-Pruning's L1 magnitude pruning at ratio 0.5, in place."""
    import torch_pruning as tp

    tp.pruner.MetaPruner(model, batch, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
                         ignored_layers=ignored, round_to=None, num_heads=_heads(model)).step()
    peer._fix_attributes(model)
    _fix_head_dims(model)


def run_torch_pruning(case: Case) -> dict:
    start = time.perf_counter()
    row = {}
    try:
        with _time_limit(TP_LIMIT_S):
            model, batch, other = case.build(), case.batch(BATCH), case.batch(OTHER_BATCH)
            want, want_other = _structure(_call(model, batch)), _structure(_call(model, other))
            before = parameter_count(model)
            tp_prune(model, batch, case.keep(model, batch))
            model.eval()
            row.update(tp_params_after=parameter_count(model), tp_params_x=round(before / parameter_count(model), 2))
            same = _structure(_call(model, batch)) == want and _structure(_call(model, other)) == want_other
            row["tp_status"] = "wrong" if not same else "ok" if row["tp_params_x"] > 1 else "unpruned"
    except Timeout as error:
        row.update(tp_status="timeout", tp_error=str(error))
    except Exception as error:  # noqa: BLE001
        row.update(tp_status="crashed", tp_error=_error(error)[:300])
    row["tp_seconds"] = round(time.perf_counter() - start, 1)
    return row


def run_one(case: Case, torch_pruning: bool = True) -> dict:
    row = {"zoo": case.zoo, "family": case.family, "model": case.model, "input": case.shape}
    row.update(run_fxprune(case))
    gc.collect()
    if not torch_pruning:
        pass
    elif row["seconds"] > TP_AFTER_S:
        row.update(tp_status="skipped")
    else:
        row.update(run_torch_pruning(case))
    gc.collect()
    return row


# --------------------------------------------------------------------------- the sweep and its report


def cases(zoos, timm_models: dict) -> list[Case]:
    found = []
    if "timm" in zoos:
        found += [_timm_case(family, *choice) for family, choice in timm_models.items()]
    if "transformers" in zoos:
        found += [_hf_case(family) for family in HF]
    if "ultralytics" in zoos:
        found += [_yolo_case(config) for config in YOLO]
    return found


COLUMNS = ["zoo", "family", "model", "input", "status", "capture", "params_x", "macs_x", "oracle", "rel_diff",
           "frozen_share", "other_batch", "seconds", "tp_status", "tp_params_x", "tp_seconds", "fxprune"]


def _table(rows: list[dict]) -> str:
    def cells(r):
        note = "; ".join(r.get("frozen_reasons", [])) or r.get("error", "")
        if r.get("macs_note"):
            note += f" — {r['macs_note'][:80]}"
        if r.get("tp_error"):
            note += f" — TP: {r['tp_error'][:120]}"
        other = r.get("other_batch", "")
        return ([r.get(c, "") if c != "other_batch" else ("ok" if other == "ok" else other[:40]) for c in COLUMNS]
                + [note.replace("|", "/").replace("\n", " ")])

    return markdown_table([*COLUMNS, "main frozen reasons / error"], [cells(r) for r in rows])


def _merged(rows: list[dict]) -> list[dict]:
    """This run's rows over those of earlier runs (a partial run updates only its models)."""
    path = RESULTS / "coverage_zoo.json"
    earlier = json.loads(path.read_text())["models"] if path.exists() else []
    fresh = {(r["zoo"], r["model"]) for r in rows}
    merged = [r for r in earlier if (r["zoo"], r["model"]) not in fresh] + rows
    return sorted(merged, key=lambda r: (ZOOS.index(r["zoo"]), r["family"], r["model"]))


def summary(rows: list[dict]) -> dict:
    out = {}
    for zoo in [z for z in ZOOS if any(r["zoo"] == z for r in rows)]:
        mine = [r for r in rows if r["zoo"] == zoo]
        counts = collections.Counter(r["status"] for r in mine)
        tp = collections.Counter(r.get("tp_status", "not run") for r in mine)
        pruned = [r for r in mine if r["status"] == "pruned"]
        out[zoo] = {"models": len(mine), **{s: counts[s] for s in STATUSES},
                    "pruned_percent": round(100 * len(pruned) / len(mine), 1),
                    "oracle_exact": sum(r["oracle"] == "exact" for r in pruned),
                    "oracle_shapes": sum(r["oracle"] == "shapes" for r in pruned),
                    "low_params_x": sum(r["params_x"] < LOW_PARAMS_X for r in pruned),
                    "other_batch_fails": sum(r.get("other_batch", "ok") != "ok" for r in pruned),
                    "torch_pruning": {s: tp[s] for s in (*TP_STATUSES, "not run") if tp[s]}}
    return out


def _revision() -> str:
    """The fxprune commit measured, ``+`` where its files differ from it."""
    git = ["git", "-C", str(RESULTS.parent.parent)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "fxprune"]).returncode != 0
    except OSError:
        return "unknown"
    return commit + ("+" if dirty else "")


def _summary_lines(totals: dict, rows: list[dict]) -> str:
    revisions = sorted({r.get("fxprune", "unknown") for r in rows})
    lines = ["", "## Summary", "", f"fxprune measured at {', '.join(revisions)} (the fxprune column: each row's)", ""]
    for zoo, s in totals.items():
        lines.append(f"- {zoo} ({s['models']} models): " + ", ".join(f"{k} {s[k]}" for k in STATUSES)
                     + f"; compressed with the oracle holding: {s['pruned_percent']}% ({s['oracle_exact']} exact, "
                     f"{s['oracle_shapes']} shapes only); params below {LOW_PARAMS_X}x: {s['low_params_x']}; "
                     f"another batch size fails: {s['other_batch_fails']}; Torch-Pruning: "
                     + ", ".join(f"{k} {v}" for k, v in s["torch_pruning"].items()))
    return "\n".join(lines) + "\n"


def _selected(found: list[Case], names: list[str]) -> list[Case]:
    wanted = {n.lower() for n in names}
    return [c for c in found if not wanted or {c.family.lower(), c.model.lower()} & wanted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="families or model names (default: all of the zoos)")
    parser.add_argument("--zoos", nargs="+", default=list(ZOOS), choices=ZOOS)
    parser.add_argument("--rechoose", action="store_true", help="choose the timm models and sizes again: print TIMM")
    parser.add_argument("--no-tp", action="store_true", help="leave Torch-Pruning out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    warnings.filterwarnings("ignore")
    if args.rechoose:
        print("TIMM = {")
        choose_timm()
        print("}")
        return
    rows = []
    revision = _revision()
    for case in _selected(cases(args.zoos, TIMM), args.models):
        rows.append({**run_one(case, torch_pruning=not args.no_tp), "fxprune": revision})
        print(json.dumps(rows[-1]), flush=True)
    rows = _merged(rows)
    totals = summary(rows)
    write_result("coverage_zoo.json", json.dumps({"summary": totals, "models": rows}, indent=1))
    text = _table(rows) + "\n" + _summary_lines(totals, rows)
    write_result("coverage_zoo.md", text)
    print(text)


if __name__ == "__main__":
    main()
