"""The judge-eval HTML: the same building blocks and style as the run report (:mod:`curate.report.html`)."""

from __future__ import annotations

from typing import Any

from curate.report import html

COLUMNS = ["judge", "agreement", "95% interval", "agreement (decided)", "3-way", "decided", "swap consistency",
           "position bias", "length bias", "seconds", "model calls"]


def _num(value: Any) -> Any:
    return "-" if value is None else value


def _ci(ci: list[float] | None) -> str:
    return "-" if not ci else f"{ci[0]:.3f} - {ci[1]:.3f}"


def judges_table(result: dict[str, Any]) -> str:
    rows = [[j["name"], _num(j["agreement"]), _ci(j["agreement_ci"]), _num(j["agreement_decided"]),
             _num(j["agreement_3way"]), _num(j["decided"]), _num(j["swap_consistency"]), _num(j["position_bias"]),
             _num(j["length_bias"]), _num(j["seconds"]), _num(j["calls"])] for j in result["judges"]]
    return html.table(COLUMNS, rows)


def categories_table(result: dict[str, Any]) -> str:
    rows = []
    for j in result["judges"]:
        for cat, fig in (j.get("by_category") or {}).items():
            rows.append([j["name"], cat, fig["n"], _num(fig["agreement"]), _ci(fig["agreement_ci"]),
                         _num(fig["agreement_3way"]), _num(fig["decided"])])
    if not rows:
        return html.none("the file has no category / subset / source column with more than one value")
    return html.table(["judge", "category", "pairs", "agreement", "95% interval", "3-way", "decided"], rows)


def verdict_section(result: dict[str, Any]) -> tuple[str, str, str]:
    """The ``judges`` section (id, title, body): one table of every judge, and what beats the length baseline."""
    lines = []
    length = next((j for j in result["judges"] if j["name"] == "length"), None)
    for j in result["judges"]:
        if j["name"] == "length" or length is None or j["agreement"] is None or length["agreement"] is None:
            continue
        lo = (j["agreement_ci"] or [None])[0]
        better = lo is not None and lo > length["agreement"]
        lines.append(f"{j['name']}: agreement {j['agreement']:.3f} vs length {length['agreement']:.3f} "
                     f"({'above' if better else 'not above'} the baseline at 95%)")
        if j["position_bias"] is not None and not 0.1 <= j["position_bias"] <= 0.9:
            lines.append(f"{j['name']}: position bias {j['position_bias']:.3f}: its verdicts follow the order shown, "
                         "not the responses (degenerate)")
    notes = "".join(f"<p>{html.esc(line)}</p>" for line in lines)
    return "judges", "Judges against the labels", judges_table(result) + notes


DEFINITIONS = (
    "agreement: share of pairs labelled a or b the judge got right (a tie or unreadable verdict counts 1/2); "
    "agreement (decided): the same over the pairs it decided; 3-way: share of all pairs (tie labels included) "
    "whose verdict equals the label; intervals: 95% percentile bootstrap, seeded. swap consistency: share of "
    "pairs whose two orders name the same response; position bias: share of decided verdicts (both orders) "
    "naming the response shown first (0.5 unbiased, 1.0 always A); length bias: share of decided pairs of "
    "unequal length won by the longer response."
)


def page(result: dict[str, Any]) -> str:
    counts = result.get("labels", {})
    subtitle = (f"{result['file']} · {result['n']} pairs (labels a {counts.get('a', 0)}, b {counts.get('b', 0)}, "
                f"tie {counts.get('tie', 0)}; {result.get('skipped', 0)} rows unreadable) · seed {result['seed']}")
    sections = [
        verdict_section(result),
        ("categories", "Per category", categories_table(result)),
        ("definitions", "Definitions", f"<p>{html.esc(DEFINITIONS)}</p>"),
    ]
    return html.page("curate judge-eval", subtitle, sections)
