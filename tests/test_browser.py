"""The report in a real browser: headless Chromium renders a report over two runs on two datasets from
file://, with every host unresolvable. No console error, every plotly figure drew its SVG, no request left
the file, and a screenshot lands in the test's folder. Skipped, with the reason printed (pytest -ra),
where no Chromium is installed (.ci/run installs Debian's package when it can)."""

import json
import os
import re
import shutil
import subprocess

import pytest

from condgen_bench.reports import build_report
from test_reports import make_run, make_second_run

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
               None)
# headless, no background traffic of the browser's own, and no host resolvable: nothing can be fetched
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
         "--disable-client-side-phishing-detection", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider"]

pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine (apt-get install -y chromium): "
                                                        "the report was not rendered in a browser")


def render(page: str, folder) -> dict:
    """Open ``page`` (a local HTML file) in headless Chromium, let its scripts run, and return what a user
    would have met: {"console": console messages, "requests": URLs the page asked the network for,
    "figures": plotly figure divs, "drawn": those holding a rendered SVG}."""
    net_log = os.path.join(folder, "net.json")
    out = subprocess.run([BROWSER, *FLAGS, f"--log-net-log={net_log}", "--dump-dom", "--virtual-time-budget=20000",
                          "file://" + os.path.abspath(page)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    requests = set()
    for event in json.load(open(net_log))["events"]:
        params = event.get("params", {})
        # the page's own requests carry its (file://) origin; the browser's own say "not an origin"
        if "url" in params and params.get("initiator", "not an origin") != "not an origin":
            requests.add(params["url"])
    figures = out.stdout.split('class="plotly-graph-div')[1:]
    return {"dom": out.stdout, "console": [line for line in out.stderr.splitlines() if ":CONSOLE" in line],
            "requests": sorted(u for u in requests if not u.startswith(("file:", "data:", "blob:"))),
            "figures": len(figures), "drawn": sum('class="main-svg"' in f for f in figures)}


def test_the_checks_catch_a_broken_page(tmp_path):
    """The three checks can fail: a script error, a fetch and a figure that never drew are all seen."""
    page = tmp_path / "broken.html"
    page.write_text('<html><body><div class="plotly-graph-div" id="f"></div><img src="https://example.com/x.png">'
                    '<script>console.error("broken"); notDefined();</script></body></html>')
    seen = render(str(page), tmp_path)
    assert any("notDefined" in line for line in seen["console"]), seen
    assert seen["requests"] == ["https://example.com/x.png"]
    assert (seen["figures"], seen["drawn"]) == (1, 0)


def test_a_report_over_two_runs_renders_offline_without_errors(tmp_path):
    first, second = str(tmp_path / "faces"), str(tmp_path / "folder")
    make_run(first)
    make_second_run(second, "folder")
    # the first run a benchmark's (config.json: each experiment's config) under --set report.compute_budget=2.5e12
    config = json.load(open(os.path.join(first, "config.json")))
    with open(os.path.join(first, "config.json"), "w") as f:
        json.dump({**config, "experiments": [{"method": m, "report": {"compute_budget": 2.5e12}}
                                             for m in ("ddpm", "dcgan")]}, f)
    page = build_report([first, second], str(tmp_path / "report.html"))
    seen = render(page, tmp_path)
    assert seen["console"] == [] and seen["requests"] == []
    assert seen["figures"] >= 10 and seen["drawn"] == seen["figures"], {k: v for k, v in seen.items() if k != "dom"}
    # the leaderboard of each dataset as drawn: the best of each column starred, KIDs within noise of it marked
    board = seen["dom"][seen["dom"].index("<h1>Leaderboard</h1>"):seen["dom"].index("<h1>Dataset")]
    assert board.count("<h2>") == 2 and board.count('class="tie"') >= 2 and board.count("★") >= 8, board
    # the equal-compute view of each dataset at the configured budget: ddpm's best within it, and dcgan (3e12
    # at its first evaluation) listed with none within it; and the Pareto fronts drawn
    for part in board.split("<h2>folder</h2>"):
        assert "At equal training compute (at most 2.5e+12 FLOPs, report.compute_budget), ddpm leads" in part
        assert re.search(r'<tr class="faded"><td class="l">dcgan</td><td class="l" colspan="5">none within the '
                         r"budget: its cheapest evaluated checkpoint took 3e\+12 FLOPs \(\d?:?trial_d at epoch 3\)",
                         part), part
    fronts = seen["dom"].split("Quality against compute: the Pareto front")[1:]  # each dataset's section
    assert len(fronts) == 2 and fronts[0].count("Pareto front") >= 3  # each figure's front trace, drawn

    shot = tmp_path / "report.png"
    subprocess.run([BROWSER, *FLAGS, f"--screenshot={shot}", "--window-size=1280,1600", "--virtual-time-budget=20000",
                    "file://" + page], capture_output=True, timeout=180, check=True)
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")


# run after the page's own scripts: sort the trials table by accuracy, then filter it, and leave the
# outcome in data attributes of <body> for --dump-dom to show
CLICKS = """<script>
var table = document.querySelector("table.sortable");
var heading = Array.prototype.find.call(table.tHead.rows[0].cells, function (c) {
  return c.textContent.indexOf("accuracy on samples") === 0; });
var ids = function () { return Array.prototype.filter.call(table.tBodies[0].rows, function (r) {
  return r.style.display !== "none"; }).map(function (r) { return r.cells[0].textContent.trim(); }).join(","); };
heading.click(); document.body.setAttribute("data-ascending", ids());
heading.click(); document.body.setAttribute("data-descending", ids());
var box = table.previousElementSibling; box.value = "dcgan"; box.dispatchEvent(new Event("input"));
document.body.setAttribute("data-filtered", ids());
</script></body>"""


def test_the_trials_table_sorts_and_filters_in_the_browser(tmp_path):
    run_dir = str(tmp_path / "run")
    make_run(run_dir)
    page = tmp_path / "clicked.html"
    page.write_text(open(build_report(run_dir), encoding="utf-8").read().replace("</body>", CLICKS))
    out = subprocess.run([BROWSER, *FLAGS, "--dump-dom", "--virtual-time-budget=5000", f"file://{page}"],
                         capture_output=True, text=True, timeout=180)
    body = re.search(r"<body([^>]*)>", out.stdout).group(1)
    order = dict(re.findall(r'data-(\w+)="([^"]*)"', body))
    # accuracy at each trial's last evaluation: a 45%, d 60%, b 80% (the best, starred), c none (last)
    assert order["ascending"] == "trial_a,trial_d,★ trial_b,trial_c", order
    assert order["descending"] == "★ trial_b,trial_d,trial_a,trial_c", order
    assert order["filtered"] == "trial_d", order
