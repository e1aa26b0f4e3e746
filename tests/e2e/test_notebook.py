"""The README's notebook snippet runs as written against a real data directory and server
(only the data directory and the server address are substituted)."""
import re
import subprocess
import sys

from conftest import BIN, DATA, ROOT, Sluice


def snippet():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### From a notebook"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_notebook_snippet(tmp_path):
    data = tmp_path / "data"
    r = subprocess.run([str(BIN), "demo", "--exit", "--data-dir", str(data), "--http-addr", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    s = Sluice(data).start()
    try:
        code = snippet().replace("sluice-data", str(data)).replace("http://127.0.0.1:8080", s.url)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "STREAMING UPDATE" in out.stdout
        assert "20210323_yoga" in out.stdout
    finally:
        s.stop()
