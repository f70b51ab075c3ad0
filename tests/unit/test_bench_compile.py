"""`python -m vtap.bench.compile --memory`: the figures the README's *What grows with
what* quotes, each part of the RSS said separately.

Measured in a fresh interpreter, as the bench is meant to run: in this one, the holes
earlier tests left in the allocator's arenas would take the new objects without the
RSS moving."""

import json
import subprocess
import sys

from vtap.bench import compile as bench_compile


def fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout


def test_memory_says_what_the_policies_the_compile_and_its_memo_hold():
    m = json.loads(fresh("import json; from vtap.bench.compile import memory; print(json.dumps(memory(3000)))"))
    assert m["policies"] == 3000
    assert m["base_mib"] > 0
    # 3,000 policies and their compile are megabytes: each step is seen in the RSS.
    assert m["compiled_mib"] > m["policies_mib"] > m["base_mib"]
    assert m["compiled_mib"] > m["result_alone_mib"]  # the memo holds what the in-place compile changes
    assert 0 < m["memo_kib_per_policy"] < m["compile_kib_per_policy"]
    assert m["compile_kib_per_policy"] == round((m["compiled_mib"] - m["policies_mib"]) * 1024 / 3000, 2)
    text = bench_compile.memory_markdown(m)
    assert text.startswith("3,000 plain policies on fattree,4") and f"{m['compiled_mib']} MiB" in text


def test_memory_mode_prints_one_line():
    out = fresh("from vtap.bench.compile import main; main(['--memory', '--count', '500'])")
    assert out.count("\n") == 1 and "500 plain policies" in out
