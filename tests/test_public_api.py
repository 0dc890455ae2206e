"""The public surface: ``covey.__all__`` is exactly what resolves, and the README's example runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import covey

ROOT = Path(__file__).parent.parent


def test_every_public_name_resolves() -> None:
    for name in covey.__all__:
        assert getattr(covey, name) is not None, name


def test_lazy_names_and_all_agree() -> None:
    assert set(covey._WHERE) | {"__version__"} == set(covey.__all__)


def test_readme_example_runs_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S)
    assert code is not None, "the README has a Python example"
    script = tmp_path / "example.py"
    script.write_text(code.group(1))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    expected = re.search(r"# (\{.*\})", code.group(1))
    assert expected is not None
    assert result.stdout.strip() == expected.group(1)
