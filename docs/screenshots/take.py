"""The screenshots under docs/screenshots/, taken by headless Chromium from a finished default run.

    .venv/bin/python docs/screenshots/take.py [PROJECT] [--out docs/screenshots]

PROJECT (default: this folder) holds `results/mlflow.db` with at least one finished pipeline run of the default
(two, for the compare view of pipeline runs). It starts `mlflow ui` on a free port, writes Snakemake's HTML report
and DVC's plots page in PROJECT, and photographs: MLflow's first view of the experiment, a pipeline run's page, two
pipeline runs compared, NI's and DI's first shard compared, the Snakemake report and the DVC plots page; and it copies
the report's figures (class grids side by side, losses, KD curves, pruning, t-SNE) beside them.
Chromium is Debian's (`apt-get install chromium`).
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def shoot(url: str, out: Path, size: tuple[int, int] = (1800, 1000), wait_ms: int = 20000) -> None:
    """A screenshot of `url` once the page's scripts had `wait_ms` of (virtual) time."""
    subprocess.run([shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={wait_ms}", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=300)
    print(f"take: {out}")


def shoot_after_click(url: str, text: str, section: str, out: Path, size: tuple[int, int] = (1800, 1200)) -> None:
    """A screenshot of `url` after a click on the element that reads `text` (a file in MLflow's compare view), scrolled
    to the heading `section`: Chromium driven over its DevTools protocol."""
    import asyncio
    import base64

    import aiohttp

    async def drive(port: int) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):  # wait for the event (the browser answers), bounded
                try:
                    async with http.get(f"http://127.0.0.1:{port}/json") as answer:
                        page = next(p for p in await answer.json() if p["type"] == "page")
                    break
                except (aiohttp.ClientError, StopIteration):
                    await asyncio.sleep(0.2)
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                ids = iter(range(1, 10**6))

                async def call(method: str, **params) -> dict:
                    n = next(ids)
                    await ws.send_json({"id": n, "method": method, "params": params})
                    async for msg in ws:
                        data = msg.json()
                        if data.get("id") == n:
                            return data.get("result", {})
                    raise SystemExit("take: the browser closed")

                async def js(expr: str):
                    return (await call("Runtime.evaluate", expression=expr, returnByValue=True)).get("result", {}).get("value")

                await call("Page.navigate", url=url)
                def find(words: str) -> str:  # the element whose own text reads `words`
                    xpath = f"//*[normalize-space(text())='{words}']"
                    return (f"document.evaluate({json.dumps(xpath)}, document, null, "
                            f"XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue")

                for _ in range(150):
                    if await js(f"!!({find(text)})"):
                        break
                    await asyncio.sleep(0.2)
                await js(f"{find(text)}.click()")
                await asyncio.sleep(4)  # the images load
                await js(f"{find(section)}.scrollIntoView({{block: 'start'}})")
                await asyncio.sleep(1)
                shot = await call("Page.captureScreenshot", format="png")
                out.write_bytes(base64.b64decode(shot["data"]))

    port = free_port()
    browser = subprocess.Popen([shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                                "--hide-scrollbars", f"--window-size={size[0]},{size[1]}", f"--remote-debugging-port={port}",
                                "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        asyncio.run(asyncio.wait_for(drive(port), 240))
    finally:
        browser.terminate()
        browser.wait(timeout=60)
    print(f"take: {out}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_shots(project: Path, out: Path, experiment: str) -> None:
    from mlflow import MlflowClient

    port = free_port()
    ui = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--port", str(port), "--backend-store-uri",
                           "sqlite:///results/mlflow.db"], cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:  # wait for the event (the server answers), bounded
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                if ui.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("take: mlflow ui did not start") from None
                time.sleep(0.3)
        client = MlflowClient(base)
        eid = client.get_experiment_by_name(experiment).experiment_id
        parents = client.search_runs([eid], "tags.stage = 'pipeline' and attributes.status = 'FINISHED'",
                                     order_by=["attributes.start_time DESC"], max_results=2)
        if not parents:
            raise SystemExit(f"take: no finished pipeline run in {experiment}")
        shoot(f"{base}/#/experiments/{eid}/runs", out / "mlflow-first-view.png")
        shoot(f"{base}/#/experiments/{eid}/runs/{parents[0].info.run_id}", out / "mlflow-pipeline-run.png", (1800, 1400))
        if len(parents) == 2:
            ids = json.dumps([p.info.run_id for p in parents])
            shoot(f"{base}/#/compare-runs?runs={urllib.parse.quote(ids)}&experiments={urllib.parse.quote(json.dumps([eid]))}",
                  out / "mlflow-compare-pipelines.png", (1800, 3000))
        shards = [client.search_runs([eid], f"tags.stage = 'synthesize' and tags.method = '{m}' and tags.shard = '0'",
                                     order_by=["attributes.start_time DESC"], max_results=1)[0].info.run_id for m in ("ni", "di")]
        compare = (f"{base}/#/compare-runs?runs={urllib.parse.quote(json.dumps(shards))}"
                   f"&experiments={urllib.parse.quote(json.dumps([eid]))}")
        shoot(compare, out / "mlflow-compare-ni-di.png", (1800, 1600))
        shoot_after_click(compare, "grid.png", "Artifacts", out / "mlflow-compare-ni-di-grids.png")
    finally:
        ui.terminate()
        ui.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project", nargs="?", type=Path, default=ROOT)
    ap.add_argument("--out", type=Path, default=ROOT / "docs/screenshots")
    ap.add_argument("--experiment", default="natinv-default")
    args = ap.parse_args()
    project, out = args.project.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    mlflow_shots(project, out, args.experiment)
    venv = Path(sys.executable).parent
    subprocess.run([str(venv / "snakemake"), "--report", "snakemake-report.html"], cwd=project, check=True,
                   capture_output=True)
    shoot((project / "snakemake-report.html").as_uri(), out / "snakemake-report.png")
    subprocess.run([str(venv / "dvc"), "plots", "show"], cwd=project, check=True, capture_output=True)
    shoot((project / "dvc_plots/index.html").as_uri(), out / "dvc-plots.png", (1800, 1400))
    figures = project / "results/default/report/figures"  # the report's own figures, in the same palette
    for pattern in ("grids-*.png", "loss-*.png", "kd-*.png", "prune-*.png", "tsne-*.png"):
        for f in sorted(figures.glob(pattern))[:1]:
            shutil.copyfile(f, out / f"report-{f.name}")
            print(f"take: {out / f'report-{f.name}'}")


if __name__ == "__main__":
    main()
