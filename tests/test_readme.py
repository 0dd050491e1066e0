"""The README's code runs as written, and CI runs the README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_python_blocks_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) >= 6
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)


def test_ci_runs_the_readme_test_command():
    match = re.search(r"<!-- test-command:.*?-->\n```bash\n(.+)\n```", README)
    assert match, "README lost its marked test command"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "test-command" in ci  # .ci/run reads the marked line, so the two cannot drift
    assert "pytest" in match.group(1)
