"""Smoke tests of the ``fxprune`` command, called in-process with tiny settings."""

import torch
import torchvision

import fxprune
from fxprune.cli import layer_widths, main


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
    assert main(["compress", "no_such_net", "--size", "32"]) == 1
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
