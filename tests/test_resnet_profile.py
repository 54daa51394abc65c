"""bench/resnet_profile.py on a tiny batch: one JSON line whose groups add up and whose convolutions are ResNet-8's."""
import contextlib
import io
import json

import pytest

pytest.importorskip("torch")
from bench import resnet_profile  # noqa: E402  (after the skip: the script needs torch)
from funcdl.nn import _conv, _conv_matmul  # noqa: E402

CONVS = ["stem_conv", "stage1_block1_conv1", "stage1_block1_conv2", "stage2_block1_conv1", "stage2_block1_conv2",
         "stage2_block1_proj_conv", "stage3_block1_conv1", "stage3_block1_conv2", "stage3_block1_proj_conv"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    saved = (_conv.conv_matmul, _conv_matmul._input_gradient, _conv_matmul._kernel_gradient)
    table = tmp_path_factory.mktemp("profile") / "resnet_profile.md"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert resnet_profile.main(["--batch", "4", "--steps", "1", "--matmul-size", "256",
                                    "--markdown", str(table)]) == 0
    assert (_conv.conv_matmul, _conv_matmul._input_gradient, _conv_matmul._kernel_gradient) == saved  # undone
    return json.loads(out.getvalue().splitlines()[-1]), table.read_text()


@pytest.mark.slow  # ~30 s, most of it compiling the ResNet's init and epoch
def test_groups_add_up_to_the_profiled_ops_and_the_step(result):
    record, _ = result
    groups = {row["group"]: row["ms"] for row in record["groups"]}
    assert sum(groups.values()) == pytest.approx(record["profiled_ops_ms"], rel=1e-3)
    assert sum(row["share"] for row in record["groups"]) == pytest.approx(1, abs=1e-3)
    for group in ("conv forward: matmul", "conv input grad: matmul", "conv weight grad: matmul",
                  "BatchNorm forward", "BatchNorm backward", "optimizer update (Adam)"):
        assert groups.get(group, 0) > 0, group
    # how the profiled ops compare with the step's time is a measurement (noise on a shared machine): reported only
    assert record["profiled_ops_ms"] > 0 and record["funcdl_step"]["ms"] > 0


@pytest.mark.slow
def test_every_convolution_of_resnet8_with_both_frameworks(result):
    record, table = result
    assert [row["layer"] for row in record["convs"]] == CONVS
    stem, proj = record["convs"][0], record["convs"][5]
    assert stem["matmul_mkn"] == [4 * 32 * 32, 27, 16] and stem["input_grad"] is None  # no gradient for the data
    assert proj["matmul_mkn"] == [4 * 16 * 16, 16, 32] and proj["strides"] == [2, 2]
    for row in record["convs"]:
        for role in ("forward", "input_grad", "weight_grad"):
            cell = row[role]
            if cell is None:
                continue
            assert 0 < cell["funcdl_matmul_ms"] <= cell["funcdl_ms"] and cell["torch_ms"] > 0, (row["layer"], role)
            assert cell["funcdl_gflops"] == pytest.approx(cell["gflop"] / cell["funcdl_ms"] * 1e3, rel=0.05)
    assert record["matmul_peak_gflops"]["jax"] > 0 and record["matmul_peak_gflops"]["torch"] > 0
    assert "| stem_conv | 4096 x 27 x 16 | forward |" in table and "| group | ms a step | share |" in table
