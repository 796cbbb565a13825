"""Smoke tests of the ``fxprune`` command, called in-process with tiny settings."""

import argparse
import gc
import re
import sys
from importlib import metadata
from urllib.error import URLError

import pytest
import torch
import torchvision
import tqdm
from torch import nn

import fxprune
import fxprune.cli as cli
from fxprune.cli import build_parser, layer_widths, main
from fxprune.cli_data import load_data, stratified_indices


def tiny_net() -> nn.Module:
    """A conv net small enough for the slow methods (MODEL ``this_module:tiny_net``)."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


TINY = f"{__name__}:tiny_net"


def _image_folder(root, classes=("a", "b", "c"), per_class=4):
    from PIL import Image

    for c, label in enumerate(classes):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (40, 40), (60 * i, 40 * c, 30)).save(root / label / f"{i}.png")
    return root


def _spy(monkeypatch, name):
    """Wrap ``fxprune.cli.<name>``: calls are recorded as (args, kwargs, result)."""
    calls, real = [], getattr(cli, name)

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((args, kwargs, result))
        return result

    monkeypatch.setattr(cli, name, spy)
    return calls


def test_compress_writes_onnx_and_saved_plan(tmp_path, capsys):
    out, folder = tmp_path / "small.onnx", tmp_path / "small.fxprune"
    code = main(["compress", "resnet18", "--size", "32", "--samples", "4", "--ratio", "0.5",
                 "--out", str(out), "--save", str(folder)])
    text = capsys.readouterr().out
    assert code == 0 and out.exists() and (folder / "plan.json").exists()
    assert "MACs" in text and "max |ORT - PyTorch|" in text
    small = fxprune.load(folder, torchvision.models.resnet18())
    assert small.get_submodule("conv1").out_channels == 32


def test_compress_accepts_module_colon_callable(capsys):
    assert main(["compress", "torchvision.models:squeezenet1_1", "--size", "32", "--samples", "2"]) == 0
    assert "parameters" in capsys.readouterr().out


def test_compress_to_a_macs_budget_with_latency_allocation(tmp_path, capsys):
    folder = tmp_path / "small.fxprune"
    code = main(["compress", "mobilenet_v2", "--size", "32", "--samples", "2", "--target-macs", "0.4",
                 "--allocation", "latency", "--save", str(folder)])
    assert code == 0 and "target_macs 0.4, latency allocation" in capsys.readouterr().out
    plan = fxprune.load(folder, torchvision.models.mobilenet_v2()).fxprune_plan
    assert plan.info["target_macs"] == 0.4 and plan.info["allocation"] == "latency"


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["compress", "no_such_net", "--size", "32"]) == 2
    assert "not a torchvision model name" in capsys.readouterr().err


def test_imagefolder_data(tmp_path, capsys):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 40), (60 * i, 90, 30)).save(tmp_path / label / f"{i}.png")
    code = main(["compress", "resnet18", "--size", "32", "--data", f"imagefolder:{tmp_path}", "--method", "taylor"])
    assert code == 0 and "taylor" in capsys.readouterr().out


def test_inspect_prints_groups_reasons_widths_and_plot(tmp_path, capsys):
    png = tmp_path / "widths.png"
    assert main(["inspect", "resnet18", "--size", "32", "--limit", "2", "--png", str(png)]) == 0
    text = capsys.readouterr().out
    assert "prunable groups" in text and "output of the graph" in text and "layer4.1.conv2" in text
    assert png.stat().st_size > 1000


def test_layer_widths_follow_the_plan():
    model = torchvision.models.resnet18().eval()
    small = fxprune.compress(model, torch.randn(1, 3, 32, 32), ratio=0.5)
    widths = {name: (before, after) for name, _, before, after in layer_widths(model, small)}
    assert widths["layer1.0.conv1"] == (64, 32) and widths["fc"] == (1000, 1000)


def test_bench_prints_speedups_and_skips_cuda(capsys):
    code = main(["bench", "resnet18", "--size", "32", "--budget", "0.05", "--threads", "1",
                 "--runtimes", "ort-cpu", "torch-cpu", "torch-cuda"])
    text = capsys.readouterr().out
    assert code == 0 and "ratio 0.5" in text and "ort-cpu" in text and "torch-cpu" in text
    if not torch.cuda.is_available():
        assert "torch-cuda skipped: no CUDA" in text


def test_bare_command_runs_the_demo(capsys):
    assert main(["--size", "32"]) == 0
    assert "resnet18" in capsys.readouterr().out


def test_imagefolder_samples_every_class_with_the_seed(tmp_path, capsys):
    root = _image_folder(tmp_path / "images")
    loader, line = load_data(f"imagefolder:{root}", 32, samples=4, batch_size=2)
    labels = torch.cat([y for _, y in loader]).tolist()
    assert len(labels) == 4 and len(set(labels)) == 3  # class-sorted order would give four of class 0
    assert line == f"calibration: 4 images from 3 classes of {root} (seed 0)"
    again, _ = load_data(f"imagefolder:{root}", 32, samples=4, batch_size=2)
    assert [y.tolist() for _, y in again] == [y.tolist() for _, y in loader]
    assert main(["compress", TINY, "--size", "32", "--data", f"imagefolder:{root}", "--samples", "4"]) == 0
    assert f"calibration: 4 images from 3 classes of {root}" in capsys.readouterr().err


def test_stratified_indices_round_robin_over_shuffled_classes():
    targets = [0] * 6 + [1] * 3 + [2] * 3
    picked = stratified_indices(targets, 9, seed=0)
    assert sorted(targets[i] for i in picked[:3]) == [0, 1, 2] and len(set(picked)) == 9
    orders = {tuple(stratified_indices(targets, 12, seed)) for seed in range(4)}
    assert len(orders) > 1 and stratified_indices(targets, 12, 3) == stratified_indices(targets, 12, 3)
    assert stratified_indices(targets, 50) and len(stratified_indices(targets, 50)) == 12


def test_compress_passes_every_option(monkeypatch, capsys):
    calls = _spy(monkeypatch, "compress")
    code = main(["compress", TINY, "--size", "16", "--samples", "4", "--batch-size", "2", "--ratio", "0.5",
                 "--round-to", "1", "--ignore", "0", "--refit", "--recalibrate-bn", "--max-batches", "all",
                 "--allocation", "latency"])
    assert code == 0
    (_, options, small), = calls
    assert options == {"ratio": 0.5, "method": "auto", "round_to": 1, "target_macs": None, "allocation": "latency",
                       "ignore": ("0",), "max_batches": None, "refit": True, "recalibrate_bn": True}
    assert small.get_submodule("0").out_channels == 16 and small.get_submodule("3").out_channels < 16
    captured = capsys.readouterr()
    assert "(l1, ratio 0.5, latency allocation, round_to 1)" in captured.out  # what auto chose for 4 samples
    err = captured.err
    assert "on 2 of 2 batches (--max-batches all)" in err and "BatchNorm statistics recalibrated" in err


@pytest.mark.parametrize("given, expected", [([], 8), (["--max-batches", "3"], 3), (["--max-batches", "0"], None),
                                             (["--max-batches", "all"], None)])
def test_max_batches_defaults_to_the_python_default(given, expected):
    assert build_parser().parse_args(["compress", "resnet18", *given]).max_batches == expected


def test_compress_prints_each_stage_and_finetunes(monkeypatch, capsys):
    calls = _spy(monkeypatch, "finetune")
    code = main(["compress", TINY, "--size", "16", "--samples", "4", "--batch-size", "2", "--max-batches", "1",
                 "--method", "reconstruction", "--finetune-epochs", "1", "--finetune-lr", "0.001"])
    assert code == 0
    (args, options, _), = calls
    assert options["epochs"] == 1 and options["lr"] == 0.001 and isinstance(options["teacher"], nn.Sequential)
    err = capsys.readouterr().err
    assert "scoring with reconstruction (ratio 0.5) on 1 of 2 batches (--max-batches 1)" in err
    assert re.search(r"fine-tuning: epoch 1/1, loss \d+\.\d{3}", err)
    lines = err.splitlines()
    stages = ["loading", "calibration:", "tracing", "pruned in", "fine-tuning:", "measuring"]
    first_lines = [next(i for i, line in enumerate(lines) if line.startswith(stage)) for stage in stages]
    assert first_lines == sorted(first_lines)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"fxprune {metadata.version('fxprune')}"


@pytest.mark.parametrize("command", ["compress", "inspect", "bench", "demo"])
def test_help_shows_every_default(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    text = " ".join(sub.format_help().split())
    for action in sub._actions:
        if action.option_strings and action.default is not argparse.SUPPRESS and action.help:
            help_text = " ".join(action.help.split())
            assert "(default" in help_text or f"{help_text} (default: " in text, action.dest


@pytest.mark.parametrize("argv, flag", [
    (["inspect", "resnet18", "--ratio", "1.2"], "--ratio"),
    (["compress", "resnet18", "--ratio", "-0.1"], "--ratio"),
    (["compress", "resnet18", "--ratio", "abc"], "--ratio"),
    (["compress", "resnet18", "--target-macs", "0"], "--target-macs"),
    (["inspect", "resnet18", "--target-macs", "1.5"], "--target-macs"),
    (["compress", "resnet18", "--samples", "0"], "--samples"),
    (["bench", "resnet18", "--batches", "0"], "--batches"),
    (["bench", "resnet18", "--ratios", "0.2", "1.0"], "--ratios"),
    (["compress", "resnet18", "--ratio", "0.3", "--target-macs", "0.5"], "--target-macs"),
    (["bench", "resnet18", "--ratio", "0.3", "--target-macs", "0.5"], "--target-macs"),
    (["compress", "resnet18", "--data", "imagefolder:/nonexistent"], "--data"),
    (["compress", "resnet18", "--weights", "NO_SUCH_WEIGHTS"], "--weights"),
    (["compress", "torchvision.models:resnet18", "--weights", "DEFAULT"], "--weights"),
    (["compress", "no_such_net"], "MODEL"),
])
def test_bad_arguments_are_one_line_errors_before_any_work(monkeypatch, capsys, argv, flag):
    monkeypatch.setattr(cli, "load_model", lambda *a: pytest.fail("work started before the arguments were checked"))
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"fxprune: error: {flag}"), err


def test_bench_ratio_is_another_name_for_ratios():
    assert build_parser().parse_args(["bench", "resnet18", "--ratio", "0.3"]).ratios == [0.3]
    assert build_parser().parse_args(["bench", "resnet18", "--ratios", "0.2", "0.4"]).ratios == [0.2, 0.4]


def test_data_and_weights_errors_name_the_flag(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    assert main(["compress", TINY, "--data", f"imagefolder:{tmp_path / 'empty'}"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("fxprune: error: --data: Found no valid file")

    def offline(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    assert main(["compress", "resnet18", "--weights", "DEFAULT"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1].startswith("fxprune: error: --weights: cannot download")
    assert "leave --weights out" in err


def test_error_under_a_progress_bar_gets_its_own_line(monkeypatch, capsys):
    held = []

    def failing(*args, **kwargs):  # fails while its own bar and bench's are on screen
        held.append(tqdm.tqdm(total=3, desc="inner", file=sys.stderr))
        raise fxprune.FxpruneError("boom")

    monkeypatch.setattr(cli, "compress", failing)
    assert main(["bench", "resnet18", "--size", "32", "--runtimes", "torch-cpu"]) == 1
    err = capsys.readouterr().err
    before, _, error = err.rstrip("\n").split("\n")[-1].rpartition("\r")
    assert error == "fxprune: error: boom" and "inner" in err and "compress" in err  # the bars were there ...
    assert before.rpartition("\r")[2].replace("\x1b[A", "").strip() == ""           # ... and were cleared first
    held.clear()
    gc.collect()
    assert capsys.readouterr().err == ""                                             # and are not drawn again


def test_inspect_says_what_was_asked_in_graph_order(monkeypatch, capsys):
    titles = []
    monkeypatch.setattr(cli, "plot_widths", lambda rows, title, path: titles.append(title))
    assert main(["inspect", "resnet18", "--size", "32", "--all", "--target-macs", "0.5", "--allocation", "latency",
                 "--png", "unused.png"]) == 0
    text = capsys.readouterr().out
    assert titles == ["resnet18: output channels at l1, target_macs 0.5, latency allocation"]
    assert "channels per layer at l1, target_macs 0.5, latency allocation" in text and "ratio 0.5" not in text
    firsts = [line.split()[0] for line in re.findall(r"^\[\d+\].*\n(.*)", text, re.MULTILINE)]
    assert firsts == ["conv1", "layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.conv2",
                      "layer2.1.conv1", "layer3.0.conv1", "layer3.0.conv2", "layer3.1.conv1", "layer4.0.conv1",
                      "layer4.0.conv2", "layer4.1.conv1"]


def test_width_plot_names_the_layers():
    rows = [("features.0", "Conv2d", 32, 16), ("features.1.conv", "Conv2d", 16, 8), ("classifier", "Linear", 10, 10)]
    figure = cli.width_figure(rows, "a title")
    axes = figure.axes[0]
    labels = axes.get_xticklabels()
    assert [label.get_text() for label in labels] == ["features.0", "features.1.conv", "classifier"]
    assert all(label.get_rotation() == 90 and label.get_fontsize() <= 6 for label in labels)
    assert axes.get_title() == "a title"
