"""The README's code runs as written, and CI runs the README's test command."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every README block run in order, examples included

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


@pytest.mark.cpu_only  # "Scaling out" uses 8 virtual CPU devices
def test_python_blocks_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) >= 6
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)


def test_ci_runs_the_readme_test_command():
    """.ci/run, in a copy of the repository whose README command is replaced by a marker
    command, runs exactly that command: the two cannot drift apart."""
    import shutil
    import subprocess
    import tempfile

    match = re.search(r"<!-- test-command:.*?-->\n```bash\n(.+)\n```", README)
    assert match, "README lost its marked test command"
    command = match.group(1)
    assert all(part in command for part in ("pytest -n auto", "ruff check", "mypy minitorch"))
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        shutil.copytree(ROOT / ".ci", copy / ".ci")
        marker = "echo ran-the-readme-command-with-pytest > ran.txt"
        (copy / "README.md").write_text(README.replace(match.group(1), marker))
        subprocess.run(["bash", str(copy / ".ci" / "run")], check=True, capture_output=True,
                       timeout=60)
        assert (copy / "ran.txt").read_text() == "ran-the-readme-command-with-pytest\n"
