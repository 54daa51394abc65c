"""The README's Python snippets run as written (offline, on the embedded digits)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title):
    """The ```python blocks of the README section ``## title``, in order."""
    text = README.read_text()
    body = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_gradients_and_your_own_loop_runs_as_written(capsys):
    blocks = section("Gradients and your own loop")
    assert len(blocks) == 3
    namespace = {}
    exec(compile(blocks[0], "README: gradients", "exec"), namespace)
    grads, params = namespace["grads"], namespace["variables"]["params"]
    assert grads["layers_1"]["kernel"].shape == params["layers_1"]["kernel"].shape == (64, 128)
    assert 1.5 < float(namespace["loss"]) < 3.5
    exec(compile(blocks[1], "README: custom loop", "exec"), namespace)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("epoch 0 step 0: loss ") and lines[-1].startswith("epoch 4: val_accuracy ")
    assert float(lines[-1].split()[-1]) > 0.8  # five epochs of the MLP on the digits
    exec(compile(blocks[2], "README: freezing", "exec"), namespace)  # asserts the frozen layer did not move
    tuned, pretrained = namespace["tuned"].variables["params"], namespace["pretrained"]["params"]
    assert (tuned["layers_3"]["kernel"] != pretrained["layers_3"]["kernel"]).any()  # the head trained
