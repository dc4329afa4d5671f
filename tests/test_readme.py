"""The README's Python example runs as printed."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        namespace: dict[str, object] = {}
        exec(compile(block, str(README), "exec"), namespace)
        frame = namespace["release"].to_frame()  # type: ignore[attr-defined]
        assert {"estimate", "ci_low", "ci_high"} <= set(frame.columns)


def test_quickstart_gives_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
