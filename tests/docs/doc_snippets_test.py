#!/usr/bin/env python3
"""Keeps the docs from rotting: every code block in README.md and docs/*.md is
compiled, run or at least syntax-checked, according to its fence's info string:

  ```cpp program [name=NAME]   a complete program: compiled and linked against
                               the built libpercore; with name=NAME it is put at
                               build/apps/NAME/NAME for the `sh run` blocks
  ```cpp decl                  namespace-scope declarations, syntax-checked
  ```cpp fragment              statements, syntax-checked inside a function
                               (one TU per page, blocks in page order, so a
                               fragment may use what an earlier decl declared)
  ```sh run                    run: a page's run blocks form one bash script
                               (set -e), run in a scratch dir whose build/apps
                               holds the built apps and the named programs;
                               port 7100 is replaced by a free port
  ```text output               right after a run block: its exact stdout
  ```sh                        bash -n (commands that change the tree or the
                               machine; they are shown, not run)
  ```json                      parsed
  ``` or ```text               not code: diagrams, sample output

Any other cpp/sh/json marking fails the test, so a new block must choose.
Compiler and linker flags come from the build itself: the compile command of
apps/skeleton/main.cpp and the link command of apps/skeleton/skeleton.
Usage: doc_snippets_test.py SOURCE_ROOT BUILD_ROOT"""
import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import testlib  # tests/support/testlib.py

REFERENCE_SOURCE = "apps/skeleton/main.cpp"
REFERENCE_TARGET = "apps/skeleton/skeleton"
DEFAULT_PORT = "7100"

FENCE = re.compile(r"^(\s*)```(.*)$")


class block:
    def __init__(self, page, line, info, text):
        self.page, self.line, self.text = page, line, text
        words = info.split()
        self.lang = words[0] if words else ""
        self.tags = words[1:]

    def where(self):
        return f"{self.page}:{self.line}"

    def option(self, key):
        for tag in self.tags:
            if tag.startswith(key + "="):
                return tag[len(key) + 1:]
        return None

    def kind(self):
        flags = [t for t in self.tags if "=" not in t]
        return (self.lang, flags[0] if flags else "")


def parse_page(path, rel):
    blocks, lines = [], open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, info, start = m.group(1), m.group(2).strip(), i + 1
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        if i == len(lines):
            raise SystemExit(f"FAIL {rel}:{start}: unclosed code block")
        blocks.append(block(rel, start, info, "\n".join(body) + "\n"))
        i += 1
    return blocks


def build_flags(build):
    """(compile argv prefix, link argv with placeholders) taken from the build."""
    commands = json.load(open(os.path.join(build, "compile_commands.json")))
    for c in commands:
        if c["file"].endswith(REFERENCE_SOURCE):
            argv = c["arguments"] if "arguments" in c else shlex.split(c["command"])
            break
    else:
        raise SystemExit(f"FAIL: no compile command for {REFERENCE_SOURCE} in {build}")
    compile_args, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a in ("-o", "-c", "-MQ", "-MF"):
            skip = True
            continue
        if a == "-MD" or a.startswith("-O") or a == "-g" or a.startswith("-fdiagnostics-color"):
            continue
        compile_args.append(a)
    compile_args += ["-O0", "-fdiagnostics-color=never"]  # snippets only need to build, fast

    out = subprocess.run(["ninja", "-C", build, "-t", "commands", REFERENCE_TARGET],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()
    link = shlex.split(out[-1])
    if "-o" not in link or REFERENCE_TARGET not in link:
        raise SystemExit(f"FAIL: unexpected link command for {REFERENCE_TARGET}: {out[-1]}")
    objects = [a for a in link if a.endswith("main.cpp.o")]
    if len(objects) != 1:
        raise SystemExit(f"FAIL: cannot find the object in the link command: {out[-1]}")
    return compile_args, link, objects[0]


def run(argv, cwd, what):
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"FAIL {what}:\n$ {shlex.join(argv)}\n{result.stdout}{result.stderr}")
        return False
    return True


HEADERS = """#include <chrono>
#include <cstdint>
#include <functional>
#include <iostream>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>
"""


def check_fragments(page, blocks, flags, build, scratch):
    """One TU per page: decls at namespace scope, fragments in functions."""
    percore = sorted(glob.glob(os.path.join(build_source_root, "framework/include/percore/*.hpp")))
    parts = [HEADERS] + [f'#include "percore/{os.path.basename(h)}"\n' for h in percore]
    parts.append("namespace po = boost::program_options;\nusing namespace percore;\n"
                 "using namespace std::chrono_literals;\nnamespace doc_page {\n")
    for n, b in enumerate(blocks):
        line = f'#line {b.line + 1} "{b.page}"\n'
        if b.kind()[1] == "decl":
            parts.append(line + b.text)
        else:
            parts.append(f"void fragment_{n}() {{\n{line}{b.text}}}\n")
    parts.append("}  // namespace doc_page\n")
    tu = os.path.join(scratch, re.sub(r"\W", "_", page) + "_fragments.cpp")
    open(tu, "w").write("".join(parts))
    return run(flags + ["-fsyntax-only", "-Wno-unused", "-Wno-unused-parameter", tu], build,
               f"{page}: cpp fragment/decl blocks (TU {tu})")


def build_program(b, flags, link, obj, build, scratch, programs):
    stem = os.path.join(scratch, f"program_{len(programs)}")
    src = stem + ".cpp"
    open(src, "w").write(f'#line {b.line + 1} "{b.page}"\n' + b.text)
    if not run(flags + ["-c", src, "-o", stem + ".o"], build, f"{b.where()}: cpp program"):
        return False
    argv = [stem + ".o" if a == obj else a for a in link]
    argv[argv.index("-o") + 1] = stem
    if not run(argv, build, f"{b.where()}: linking the cpp program"):
        return False
    programs.append((b.option("name"), stem))
    return True


def run_page(page, steps, build, scratch, programs):
    """Runs a page's `sh run` blocks as one script; checks `text output` blocks."""
    sandbox = tempfile.mkdtemp(dir=scratch, prefix="run_")
    apps = os.path.join(sandbox, "build", "apps")
    os.makedirs(apps)
    for d in glob.glob(os.path.join(build, "apps", "*")):
        if os.path.isdir(d):
            os.symlink(d, os.path.join(apps, os.path.basename(d)))
    for name, path in programs:
        if name:
            os.makedirs(os.path.join(apps, name), exist_ok=True)
            os.symlink(path, os.path.join(apps, name, name))
    port = str(testlib.free_port())
    script = ["set -e"]
    for n, (b, _) in enumerate(steps):
        script.append(f"echo '@@step {n}@@'")
        script.append(b.text.replace(DEFAULT_PORT, port))
    script.append(f"echo '@@step {len(steps)}@@'")
    proc = subprocess.Popen(["bash", "-c", "\n".join(script)], cwd=sandbox, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        out, err = "", "timed out after 90 s"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything a block left running
        except ProcessLookupError:
            pass
        proc.wait()
    pieces = re.split(r"^@@step (\d+)@@\n", out, flags=re.M)
    outputs = {int(pieces[i]): pieces[i + 1] for i in range(1, len(pieces) - 1, 2)}
    ok = proc.returncode == 0 and len(steps) in outputs
    if not ok:
        failed = max(outputs) if outputs else 0
        where = steps[min(failed, len(steps) - 1)][0].where()
        print(f"FAIL {page}: `sh run` blocks exited {proc.returncode} (last started: {where})\n"
              f"stdout:\n{out}\nstderr:\n{err}")
        return False
    for n, (b, expected) in enumerate(steps):
        if expected is None:
            continue
        want = expected.text.replace(DEFAULT_PORT, port)
        if outputs.get(n) != want:
            print(f"FAIL {expected.where()}: output of the block at {b.where()} differs\n"
                  f"expected:\n{want}got:\n{outputs.get(n)}")
            ok = False
    return ok


def main():
    global build_source_root
    source, build = (os.path.abspath(p) for p in sys.argv[1:3])
    build_source_root = source
    pages = [os.path.join(source, "README.md")] + sorted(glob.glob(os.path.join(source, "docs", "*.md")))
    flags, link, obj = build_flags(build)
    scratch = tempfile.mkdtemp(prefix="percore-docs-")
    failures, counts = 0, {}
    try:
        for path in pages:
            if not os.path.exists(path):
                continue
            rel = os.path.relpath(path, source)
            blocks = parse_page(path, rel)
            fragments, programs, steps = [], [], []
            for i, b in enumerate(blocks):
                kind = b.kind()
                counts[kind] = counts.get(kind, 0) + 1
                if kind in (("", ""), ("text", ""), ("text", "output")):
                    if kind == ("text", "output") and not (i and blocks[i - 1].kind() == ("sh", "run")):
                        print(f"FAIL {b.where()}: `text output` must follow a `sh run` block")
                        failures += 1
                    continue
                if kind in (("cpp", "fragment"), ("cpp", "decl")):
                    fragments.append(b)
                elif kind == ("cpp", "program"):
                    failures += not build_program(b, flags, link, obj, build, scratch, programs)
                elif kind == ("sh", "run"):
                    nxt = blocks[i + 1] if i + 1 < len(blocks) else None
                    steps.append((b, nxt if nxt and nxt.kind() == ("text", "output") else None))
                elif kind == ("sh", ""):
                    failures += not run(["bash", "-n", "-c", b.text], source, f"{b.where()}: bash -n")
                elif kind == ("json", ""):
                    try:
                        json.loads(b.text)
                    except ValueError as e:
                        print(f"FAIL {b.where()}: bad JSON: {e}")
                        failures += 1
                else:
                    print(f"FAIL {b.where()}: unknown block marking '```{b.lang} {' '.join(b.tags)}'"
                          " (see tests/docs/doc_snippets_test.py for the kinds)")
                    failures += 1
            if fragments:
                failures += not check_fragments(rel, fragments, flags, build, scratch)
            if steps:
                failures += not run_page(rel, steps, build, scratch, programs)
    finally:
        subprocess.run(["rm", "-rf", scratch])
    summary = ", ".join(f"{k[0] or 'plain'} {k[1]}".strip() + f": {v}" for k, v in sorted(counts.items()))
    if failures:
        print(f"{failures} failure(s); blocks seen: {summary}")
        return 1
    print(f"ok: every code block checked ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
