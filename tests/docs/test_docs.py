"""The docs cannot rot: every block marked runnable in README.md and docs/*.md runs, every
`loom COMMAND ... --flag` they name is a flag of that command's --help, and docs/pipelines.md
documents exactly the node types `loom pipeline nodes` lists.

A runnable block is a fenced block whose info string is `sh runnable` (run with bash -e from the
repository root) or `python runnable` (run with this Python, `import loom` from the build tree).
Blocks keep to small inputs and few repetitions; BLOCK_TIMEOUT_S only ends one that hangs.

    LOOM_BINARY=build/loom python3 -m pytest -q tests/docs/test_docs.py
"""
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

ROOT = os.environ.get("LOOM_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LOOM = os.path.abspath(os.environ.get("LOOM_BINARY") or os.path.join(ROOT, "build", "loom"))
BLOCK_TIMEOUT_S = 300  # a bound for a hang, not a pace
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.M | re.S)
COMMANDS_WITH_SUBCOMMANDS = {"bench", "pipeline"}


def doc_files():
    files = [os.path.join(ROOT, "README.md")]
    docs = os.path.join(ROOT, "docs")
    files += sorted(os.path.join(docs, f) for f in os.listdir(docs) if f.endswith(".md"))
    return files


def rel(path):
    return os.path.relpath(path, ROOT)


def runnable_blocks():
    blocks = []
    for path in doc_files():
        text = open(path, encoding="utf-8").read()
        for m in FENCE.finditer(text):
            info = m.group(1).split()
            if len(info) >= 2 and info[1] == "runnable":
                line = text.count("\n", 0, m.start()) + 1
                blocks.append(pytest.param(info[0], m.group(2), id=f"{rel(path)}:{line}"))
    return blocks


def with_binary(code):
    """`build/loom` and `build/examples/` in a block are this build's (the test may run from another
    build folder)."""
    build = os.path.dirname(LOOM)
    code = re.sub(r"(?<![\w/.])build/examples/", shlex.quote(os.path.join(build, "examples")) + "/", code)
    return re.sub(r"(?<![\w/.])build/loom\b", shlex.quote(LOOM), code)


@pytest.mark.parametrize("language,code", runnable_blocks())
def test_runnable_block_runs(language, code):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(os.path.dirname(LOOM), "python") + os.pathsep + env.get("PYTHONPATH", "")
    if language == "sh":
        argv = ["bash", "-e", "-o", "pipefail", "-c", with_binary(code)]
    elif language == "python":
        argv = [sys.executable, "-c", code]
    else:
        pytest.fail(f"a runnable block must be sh or python, not '{language}'")
    start = time.monotonic()
    try:
        r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {BLOCK_TIMEOUT_S} s (hung?):\n{code}")
    took = time.monotonic() - start
    assert r.returncode == 0, f"exit {r.returncode} after {took:.1f} s\n--- block\n{code}--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"


def test_there_are_runnable_blocks():
    assert len(runnable_blocks()) >= 10


# ---- flags ---------------------------------------------------------------------------------------

_help_cache = {}


def help_flags(words):
    """Every --flag `loom WORDS --help` lists."""
    key = tuple(words)
    if key not in _help_cache:
        r = subprocess.run([LOOM, *words, "--help"], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            _help_cache[key] = None
        else:
            _help_cache[key] = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", r.stdout)) | {"--help", "--version"}
    return _help_cache[key]


def command_mentions():
    """(where, words, flags) for every `loom COMMAND [SUB] ... --flag ...` in the docs: in code
    blocks (a command runs to the end of its line, or past a trailing backslash) and in inline code."""
    mentions = []
    for path in doc_files():
        text = open(path, encoding="utf-8").read()
        pieces = []  # (line, text)
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 2
            body = re.sub(r"\\\n", " ", m.group(2))
            for i, l in enumerate(body.split("\n")):
                pieces.append((line + i, l))
        prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        for m in re.finditer(r"`([^`\n]+)`", prose):
            pieces.append((prose.count("\n", 0, m.start()) + 1, m.group(1)))
        for line, piece in pieces:
            for command in re.split(r"\s(?:\||&&|;|\|\|)\s", piece):
                command = command.split(" #")[0]
                m = re.search(r"(?:^|[\s/(\"'])loom\s+([a-z][a-z-]*)((?:\s+[a-z][a-z-]*)?)(.*)", command)
                if not m:
                    continue
                words = [m.group(1)]
                sub = m.group(2).strip()
                if m.group(1) in COMMANDS_WITH_SUBCOMMANDS and sub:
                    words.append(sub)
                flags = re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(2) + m.group(3))
                if flags:
                    mentions.append((f"{rel(path)}:{line}", words, flags))
    return mentions


def test_every_flag_named_in_the_docs_exists():
    mentions = command_mentions()
    bad = []
    checked = 0
    for where, words, flags in mentions:
        known = help_flags(words)
        if known is None:
            bad.append(f"{where}: `loom {' '.join(words)}` is not a command")
            continue
        for flag in flags:
            checked += 1
            if flag not in known:
                bad.append(f"{where}: `loom {' '.join(words)}` has no {flag}")
    print(f"{checked} flags in {len(mentions)} command lines checked")
    assert checked >= 50
    assert not bad, "\n".join(bad)


# ---- pipeline node types -------------------------------------------------------------------------

def test_pipelines_md_documents_every_node_type():
    r = subprocess.run([LOOM, "pipeline", "nodes"], capture_output=True, text=True, timeout=30, check=True)
    registered = set(r.stdout.split())
    text = open(os.path.join(ROOT, "docs", "pipelines.md"), encoding="utf-8").read()
    documented = set(re.findall(r"^### `([a-z_]+)`", text, re.M))
    assert registered, "loom pipeline nodes listed nothing"
    assert not registered - documented, f"node types without a section in docs/pipelines.md: {sorted(registered - documented)}"
    assert not documented - registered, f"docs/pipelines.md documents node types that do not exist: {sorted(documented - registered)}"


# ---- links ---------------------------------------------------------------------------------------

def test_relative_links_resolve():
    bad = []
    for path in doc_files():
        text = FENCE.sub("", open(path, encoding="utf-8").read())
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            if not os.path.exists(os.path.join(os.path.dirname(path), target)):
                bad.append(f"{rel(path)}: {target}")
    assert not bad, "\n".join(bad)
