"""``report.html``: one self-contained page of a pair's check, to read in a browser.

Written from ``report.json``'s content (``parity.frontends.report.build_report``) beside
it: the verdict, the per-tensor table, the failure, the diagnosis, where inside the module
it first goes wrong, the replay command, and the pictures inline (base64), so that the page
needs nothing but itself: no network, no other file. Each picture marks itself loaded
(``data-loaded``) for the browser test.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
.verdict { display: inline-block; padding: 0.15em 0.7em; border-radius: 0.3em; color: white;
  font-weight: bold; }
.pass { background: #2e7d32; } .fail { background: #c62828; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: right; }
th:first-child, td:first-child { text-align: left; font-family: monospace; }
tr.failed td { color: #c62828; font-weight: bold; }
pre { background: #f6f6f6; padding: 0.7em; overflow-x: auto; white-space: pre-wrap; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""

_CAPTIONS = {
    "attention.png": "the reference's and the port's attention weights of one query "
    "position, at the first line the port never computes",
    "side_by_side_shared.png": "reference, port and their difference on one shared colour "
    "scale: a damped or shifted output shows as a change of colour",
    "side_by_side.png": "the same, each panel in its own colour range (its shape shows)",
    "error_map.png": "the error per position (h, w)",
    "channel_errors.png": "the error per channel",
    "worst_tensor.png": "the example's worst tensor",
}


def write_html(report: dict, directory: Path, where: str | None = None) -> Path:
    """``directory/report.html`` from ``report`` (the JSON's content), the pictures it
    names in ``directory`` and ``where``: the localization in the command's own words
    (``Localization.describe()``)."""
    path = directory / "report.html"
    path.write_text(render(report, directory, where))
    return path


def render(report: dict, directory: Path, where: str | None = None) -> str:
    verdict = report["verdict"]
    title = f"{report['module']}: {verdict}"
    parts = [
        f"<h1>{_e(report['module'])} <span class='verdict {verdict}'>{verdict.upper()}</span></h1>",
        f"<p>port <code>{_e(report['port'])}</code> ({_e(report['data_format'])}); "
        f"{_examples(report)}; {_rule(report['policy'])}</p>",
        _table(report["tensors"]),
    ]
    if report.get("counterexample"):
        example = ",".join(str(v) for v in report["counterexample"].values())
        parts.append(f"<h2>Minimal counterexample</h2><p><code>{_e(example)}</code></p>")
    if report.get("error"):
        parts.append(f"<h2>Failure</h2><pre>{_e(report['error'])}</pre>")
    parts += _diagnosis(report.get("diagnosis"))
    parts += _localization(where)
    if report.get("replay"):
        parts.append(f"<h2>Replay</h2><pre>{_e(report['replay'])}</pre>")
    parts += _pictures(report.get("pictures") or [], directory, report.get("pictures_of"))
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n{body}\n"
        "</body></html>\n"
    )


def _rule(policy: dict) -> str:
    """The policy in words; an int8 file's infinite factor (written as null) judges nothing."""
    if policy.get("factor") is None:
        return "measured, not judged: no float parity is claimed (an int8 file)."
    return (
        f"a tensor passes when its error against float64 truth is at most "
        f"{policy['factor']:g}x the reference's own (or the rounding floor)."
    )


def _examples(report: dict) -> str:
    passed = f"{report['examples_run']} example{'s' if report['examples_run'] != 1 else ''} passed"
    return passed + (", then one failed" if report.get("counterexample") else "")


def _e(text) -> str:
    return html.escape(str(text))


def _table(tensors: list[dict]) -> str:
    rows = [
        "<table id='tensors'><tr><th>tensor</th><th>worst ratio</th><th>port error</th>"
        "<th>ref error</th><th>result</th></tr>"
    ]
    for t in tensors:
        result = "pass" if t["passed"] else "FAIL"
        rows.append(
            f"<tr class='{'passed' if t['passed'] else 'failed'}'><td>{_e(t['name'])}</td>"
            f"<td>{_number(t['worst_ratio'])}</td><td>{_number(t['relative_error'])}</td>"
            f"<td>{_number(t['reference_error'])}</td><td>{result}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _diagnosis(diagnosis: dict | None) -> list[str]:
    if not diagnosis:
        return []
    words = "Diagnosis" if diagnosis.get("explained") else "Diagnosis: unexplained"
    parts = [f"<h2>{words}</h2><p>{_e(diagnosis.get('cause', ''))}</p>"]
    if diagnosis.get("suggestion"):
        parts.append(f"<p>{_e(diagnosis['suggestion'])}</p>")
    return parts


def _localization(where: str | None) -> list[str]:
    if not where:
        return []
    heading = where.split(" (", 1)[0]  # "Where it first goes wrong", "Where the int8 file ..."
    return [f"<h2>{_e(heading)}</h2>", f"<pre>{_e(where)}</pre>"]


def _pictures(names: list[str], directory: Path, drawn: dict | None) -> list[str]:
    if not names:
        return []
    parts = ["<h2>Pictures</h2>"]
    if drawn:
        example = ",".join(str(v) for v in drawn["example"].values())
        parts.append(f"<p>drawn on <code>{_e(example)}</code> ({_e(drawn['activation'])})</p>")
    order = [n for n in _CAPTIONS if n in names] + [n for n in names if n not in _CAPTIONS]
    for name in order:
        data = base64.b64encode((directory / name).read_bytes()).decode("ascii")
        parts.append(
            f"<figure><img alt='{_e(name)}' src='data:image/png;base64,{data}' "
            "onload=\"this.dataset.loaded='yes'\">"
            f"<figcaption>{_e(name)}: {_e(_CAPTIONS.get(name, ''))}</figcaption></figure>"
        )
    return parts
