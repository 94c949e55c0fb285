"""Fig. 4 (subject–verb agreement branch flows) runs end to end in --quick mode."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fig4_quick(tmp_path):
    out = tmp_path / "fig4.png"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "fig4_sva.py"),
            "--quick",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.exists() and out.stat().st_size > 0
    assert "key" in proc.stdout.lower()
