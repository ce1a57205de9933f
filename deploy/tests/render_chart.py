"""Render and lint the Arcane chart offline, print the result as JSON.

Uses the PyPI package helm-python-sdk, which embeds Helm as a library (no helm binary):
`Chart.load(dir).render(values, name=..., namespace=...)` is `helm template`, and
`lint(dir, strict=True)` is `helm lint --strict`.

    python deploy/tests/render_chart.py [CHART_DIR] [--values-json VALUES_JSON]

Output: {"lint": <lint result>, "objects": [<rendered objects>], "crds": [<crds/ objects>]}.
Exits 1 when lint reports errors.
"""

import argparse
import json
import pathlib
import sys

import yaml
from helm_python.chart import Chart, lint

RELEASE = "arcane"
NAMESPACE = "streams"


def documents(text):
    return [doc for doc in yaml.safe_load_all(text) if doc]


def main():
    here = pathlib.Path(__file__).resolve().parent
    parser = argparse.ArgumentParser()
    parser.add_argument("chart", nargs="?", default=str(here.parent / "chart"))
    parser.add_argument("--values-json", default="{}", help="values overriding values.yaml")
    args = parser.parse_args()
    values = json.loads(args.values_json)

    lint_result = lint(args.chart, values=values, strict=True, namespace=NAMESPACE)
    chart = Chart.load(args.chart)
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for name in sorted(rendered):
        if name.endswith("NOTES.txt"):
            continue
        for doc in documents(rendered[name]):
            objects.append({"source": name, "object": doc})
    crds = []
    crd_dir = pathlib.Path(args.chart) / "crds"
    for path in sorted(crd_dir.glob("*.yaml")):
        for doc in documents(path.read_text()):
            crds.append({"source": f"crds/{path.name}", "object": doc})

    json.dump({"lint": lint_result, "objects": objects, "crds": crds}, sys.stdout, default=str)
    # Helm's lint severities: 1 info, 2 warning, 3 error; --strict fails on warnings too.
    messages = lint_result.get("messages") or []
    failed = lint_result.get("errors") or [m for m in messages if int(m.get("severity", 0)) >= 2]
    if failed:
        print(f"helm lint --strict failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
