"""Every cookbook script runs top to bottom, as a user would run it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPTS = sorted(p.name for p in (ROOT / "cookbook").glob("[0-9][0-9]_*.py"))
EXPECT = {
    "01_langchain_rag.py": "answer:",
    "02_llamaindex_query_engine.py": "rerank:",
    "03_agent_tool.py": "agent calls search_reranked",
    "04_hosted_api.py": "started llama.cpp",
    "05_choosing_a_method.py": "wrote",
    "06_abstention_calibration.py": "nAUC over 5 random",
    "07_rewrite_fuse_abstain.py": "off-topic abstained: 3/3",
}


def test_every_script_is_listed() -> None:
    assert SCRIPTS == sorted(EXPECT)


@pytest.mark.parametrize("script", SCRIPTS)
def test_cookbook_script_runs(script: str, tmp_path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    env.pop("RANKWISE_BASE_URL", None)
    args = [sys.executable, str(ROOT / "cookbook" / script)]
    if script.startswith("05_"):
        args += ["--out", str(tmp_path / "methods.png")]
    if script.startswith("04_") and importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("RANKWISE_REQUIRE_SERVER"):
            pytest.fail("llama-cpp-python[server] is not installed; run ./run setup")
        pytest.skip("needs llama-cpp-python[server]")
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert EXPECT[script] in done.stdout
