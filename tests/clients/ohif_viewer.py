"""The OHIF viewer v3 (a real browser client) against a running hub: pydicom's real test files are
stored with dicomweb-client, then headless Chromium, driven by selenium, opens OHIF's prebuilt
app on each study. OHIF runs its DICOMweb query sequence (QIDO-RS studies and series searches,
WADO-RS series metadata, then frames) and renders the image on a canvas, whose pixels are
checked. Run by tests/e2e_ohif.rs.

Usage: python ohif_viewer.py http://127.0.0.1:PORT/dicom-web OHIF_DIST_DIR

OHIF_DIST_DIR is the `dist` directory of the `@ohif/app` npm package (tests/run.sh fetches it);
it is served read-only: the viewer's configuration (app-config.js) is generated in memory. A
small threaded HTTP server serves the app at the site root (unknown paths fall back to
index.html, as OHIF's client-side routes need) and proxies /dicom-web/* to the hub, so the
browser sees one origin and no CORS is involved; every proxied request is logged.

Exits non-zero with the failed check, the proxied requests and the browser console on stderr
(and a screenshot in $TMPDIR or /tmp). Optional environment: HUB_TEST_CHROMIUM and
HUB_TEST_CHROMEDRIVER (default: from PATH), HUB_TEST_OHIF_TIMEOUT (seconds per study, default
90), HUB_TEST_OHIF_SCREENSHOTS (a directory for a screenshot per study), HUB_TEST_OHIF_VERBOSE
(print the whole browser console).
"""

import json
import mimetypes
import os
import shutil
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

URL = sys.argv[1].rstrip("/")
DIST = os.path.abspath(sys.argv[2])
CHROMIUM = os.environ.get("HUB_TEST_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get(
    "HUB_TEST_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver"
)
TIMEOUT = float(os.environ.get("HUB_TEST_OHIF_TIMEOUT", "90"))

# CT and MR, uncompressed (explicit VR little endian), and a 30-frame YBR colour ultrasound in
# JPEG baseline (a multi-frame, compressed instance OHIF decodes with its own codecs).
FILES = ["CT_small.dcm", "MR_small.dcm", "examples_ybr_color.dcm"]

APP_CONFIG = {
    "routerBasename": "/",
    "extensions": [],
    "modes": [],
    "showStudyList": True,
    "showWarningMessageForCrossOrigin": False,
    "showCPUFallbackMessage": False,
    "showLoadingIndicator": True,
    "investigationalUseDialog": {"option": "never"},
    "defaultDataSourceName": "local",
    "dataSources": [
        {
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "local",
            "configuration": {
                "friendlyName": "hub (embedded DICOMweb)",
                "name": "hub",
                "qidoRoot": "/dicom-web",
                "wadoRoot": "/dicom-web",
                "wadoUriRoot": "/dicom-web",
                "qidoSupportsIncludeField": True,
                "imageRendering": "wadors",
                "thumbnailRendering": "wadors",
                "enableStudyLazyLoad": True,
                "supportsFuzzyMatching": False,
                "supportsWildcard": True,
                "staticWado": False,
                "singlepart": "bulkdata,video",
                "bulkDataURI": {"enabled": True},
                "omitQuotationForMultipartRequest": True,
            },
        }
    ],
}
APP_CONFIG_JS = ("window.config = " + json.dumps(APP_CONFIG, indent=2) + ";\n").encode()

mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/json", ".json")


def check(cond, what):
    if not cond:
        fail(what)
    print(f"ok: {what}", flush=True)


# What the proxy forwarded, and what the browser's console said (filled in as the test runs).
PROXIED = []
PROXIED_LOCK = threading.Lock()
CONSOLE = []
DRIVER = None


def fail(what):
    print(f"FAILED: {what}", file=sys.stderr)
    print("\nproxied DICOMweb requests (status, content type, path, Accept):", file=sys.stderr)
    with PROXIED_LOCK:
        for r in PROXIED:
            print(f"  {r['status']} {r['type']!r:60} {r['path']}  [{r['accept']}]", file=sys.stderr)
    drain_console()
    print("\nbrowser console:", file=sys.stderr)
    for e in CONSOLE:
        print(f"  {e.get('level')} {e.get('message')}", file=sys.stderr)
    if DRIVER is not None:
        try:
            shot = os.path.join(os.environ.get("TMPDIR", "/tmp"), "ohif_viewer_failure.png")
            DRIVER.save_screenshot(shot)
            print(f"\nscreenshot: {shot}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - best effort on the way out
            print(f"\n(no screenshot: {e})", file=sys.stderr)
        quit_browser()
    sys.exit(1)


def quit_browser():
    global DRIVER
    if DRIVER is not None:
        driver, DRIVER = DRIVER, None
        driver.quit()


def drain_console():
    if DRIVER is None:
        return
    try:
        CONSOLE.extend(DRIVER.get_log("browser"))
    except Exception:  # noqa: BLE001 - the browser may be gone
        pass


# --- the hub: store the test files -------------------------------------------------------------

client = DICOMwebClient(url=URL)
studies = {}
for name in FILES:
    ds = pydicom.dcmread(get_testdata_file(name))
    client.store_instances(datasets=[ds])
    studies[name] = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
found = {
    s["0020000D"]["Value"][0] for s in client.search_for_studies(search_filters={})
}
check(
    all(uid in found for uid, _, _ in studies.values()),
    f"stored {', '.join(FILES)} with dicomweb-client; QIDO-RS finds their {len(studies)} studies",
)


# --- the viewer's origin: OHIF's static app, and /dicom-web proxied to the hub ---------------

HUB = urllib.parse.urlsplit(URL)
HUB_ROOT = f"{HUB.scheme}://{HUB.netloc}"
FORWARDED_REQUEST_HEADERS = ["Accept", "Range", "If-None-Match", "If-Modified-Since"]
FORWARDED_RESPONSE_HEADERS = ["Content-Type", "Content-Range", "Accept-Ranges", "ETag",
                              "Last-Modified", "Warning"]
hub_session = requests.Session()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/dicom-web" or self.path.startswith("/dicom-web/"):
            self.proxy("GET")
        else:
            self.static(head=False)

    def do_HEAD(self):
        if self.path.startswith("/dicom-web/"):
            self.proxy("HEAD")
        else:
            self.static(head=True)

    def do_OPTIONS(self):
        if self.path.startswith("/dicom-web/"):
            self.proxy("OPTIONS")
        else:
            self.reply(204, {}, b"")

    def reply(self, status, headers, body, head=False):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def proxy(self, method):
        headers = {h: self.headers[h] for h in FORWARDED_REQUEST_HEADERS if self.headers[h]}
        try:
            r = hub_session.request(method, HUB_ROOT + self.path, headers=headers, timeout=60)
            status, body = r.status_code, r.content
            out = {h: r.headers[h] for h in FORWARDED_RESPONSE_HEADERS if h in r.headers}
        except requests.RequestException as e:
            status, body, out = 502, str(e).encode(), {"Content-Type": "text/plain"}
        with PROXIED_LOCK:
            PROXIED.append({
                "method": method,
                "path": self.path,
                "status": status,
                "type": out.get("Content-Type", ""),
                "accept": self.headers.get("Accept", ""),
                "bytes": len(body),
            })
        self.reply(status, out, body, head=method == "HEAD")

    def static(self, head):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if path == "/app-config.js":
            self.reply(200, {"Content-Type": "text/javascript"}, APP_CONFIG_JS, head)
            return
        file = os.path.normpath(os.path.join(DIST, path.lstrip("/")))
        if not file.startswith(DIST + os.sep) or not os.path.isfile(file):
            # A client-side route (/viewer, /) or anything unknown: the single-page app.
            file = os.path.join(DIST, "index.html")
        ctype = mimetypes.guess_type(file)[0] or "application/octet-stream"
        with open(file, "rb") as f:
            body = f.read()
        self.reply(200, {"Content-Type": ctype}, body, head)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # The browser drops connections it no longer needs (prefetches when the page changes or
        # the browser quits): not an error of the test.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


httpd = Server(("127.0.0.1", 0), Handler)
threading.Thread(target=httpd.serve_forever, daemon=True).start()
ORIGIN = f"http://127.0.0.1:{httpd.server_address[1]}"
r = requests.get(f"{ORIGIN}/viewer?StudyInstanceUIDs=x", timeout=10)
check(
    r.status_code == 200 and b"app-config.js" in r.content,
    "the viewer's origin serves OHIF's app, /viewer falling back to index.html",
)
r = requests.get(f"{ORIGIN}/dicom-web/studies", headers={"Accept": "application/dicom+json"},
                 timeout=10)
check(r.status_code == 200 and len(r.json()) >= len(studies),
      "the viewer's origin proxies /dicom-web to the hub")
with PROXIED_LOCK:
    PROXIED.clear()


# --- the browser -------------------------------------------------------------------------------

def start_browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--disable-component-update",
        "--no-first-run",
        "--no-default-browser-check",
        "--window-size=1280,900",
        # Nothing but this machine: the test needs no network, and proves it.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        # WebGL in software (cornerstone renders with vtk.js on WebGL; without it OHIF falls
        # back to its CPU renderer, which works too).
        "--use-gl=angle",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
    ]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))


def requests_for(study):
    """The proxied requests of OHIF's query sequence for one study, each step's 200 answers."""
    q = urllib.parse.quote
    with PROXIED_LOCK:
        log = list(PROXIED)
    steps = {"studies": [], "series": [], "metadata": [], "frames": []}
    prefix = f"/dicom-web/studies/{study}/"
    for r in log:
        if r["status"] != 200 or r["method"] != "GET":
            continue
        path, _, query = r["path"].partition("?")
        params = urllib.parse.parse_qs(query)
        if path == "/dicom-web/studies" and study in ",".join(
            params.get("StudyInstanceUID", []) + params.get("0020000D", [])
        ):
            steps["studies"].append(r)
        elif path in (prefix + "series", q(prefix + "series")):
            steps["series"].append(r)
        elif path.startswith(prefix) and path.endswith("/metadata"):
            steps["metadata"].append(r)
        elif path.startswith(prefix) and ("/frames/" in path or "/bulkdata" in path):
            steps["frames"].append(r)
    return steps


# Draws each cornerstone canvas onto a 2D canvas and summarises its pixels (luminance-ish: the
# maximum of R, G and B): size, min, max, number of distinct values, share of non-black pixels.
CANVAS_STATS_JS = """
const out = [];
for (const c of document.querySelectorAll('canvas')) {
  const s = {cls: c.className, w: c.width, h: c.height};
  if (!c.width || !c.height) { out.push(s); continue; }
  try {
    const t = document.createElement('canvas');
    t.width = c.width; t.height = c.height;
    const ctx = t.getContext('2d');
    ctx.drawImage(c, 0, 0);
    const d = ctx.getImageData(0, 0, t.width, t.height).data;
    let min = 255, max = 0, lit = 0;
    const seen = new Set();
    for (let i = 0; i < d.length; i += 4) {
      const v = Math.max(d[i], d[i + 1], d[i + 2]);
      if (v < min) min = v;
      if (v > max) max = v;
      if (v > 0) lit++;
      seen.add(v);
    }
    Object.assign(s, {min, max, distinct: seen.size, lit: lit / (d.length / 4)});
  } catch (e) { s.error = String(e); }
  out.push(s);
}
return out;
"""


def viewport_canvases():
    stats = DRIVER.execute_script(CANVAS_STATS_JS) or []
    return [s for s in stats if "cornerstone" in (s.get("cls") or "")]


def rendered(stats):
    """The viewport's canvas (the largest: thumbnails are drawn on small ones), if it shows an
    image: many grey levels, not a uniform (blank) fill."""
    big = sorted(stats, key=lambda s: s["w"] * s["h"], reverse=True)[:1]
    return [s for s in big if s.get("distinct", 0) >= 16 and s.get("max", 0) > s.get("min", 0)]


def frame_numbers(steps):
    return {r["path"].split("?")[0].rsplit("/frames/", 1)[-1] for r in steps.get("frames", [])}


def view(name, what, min_frames=1):
    study, series, _ = studies[name]
    with PROXIED_LOCK:
        PROXIED.clear()
    started = time.monotonic()
    DRIVER.get(f"{ORIGIN}/viewer?StudyInstanceUIDs={study}")
    deadline = started + TIMEOUT
    steps, canvases, done = {}, [], False
    while not done and time.monotonic() < deadline:
        drain_console()
        steps = requests_for(study)
        canvases = viewport_canvases()
        done = (all(steps.values()) and bool(rendered(canvases))
                and len(frame_numbers(steps)) >= min_frames)
        if not done:
            time.sleep(0.5)
    took = time.monotonic() - started
    with PROXIED_LOCK:
        log = list(PROXIED)
    state = "rendered after" if done else "gave up after"
    print(f"   ({what}: {state} {took:.1f} s; {len(log)} proxied requests:)", flush=True)
    for r in log:
        print(f"     {r['method']} {short(r['path'])} [Accept: {r['accept']}] -> {r['status']} "
              f"{r['type'].split(';')[0]}, {r['bytes']} bytes", flush=True)
    if os.environ.get("HUB_TEST_OHIF_SCREENSHOTS"):
        shot = os.path.join(os.environ["HUB_TEST_OHIF_SCREENSHOTS"], f"{name}.png")
        DRIVER.save_screenshot(shot)
        print(f"   (screenshot: {shot})", flush=True)

    check(steps.get("studies"), f"{what}: OHIF searched the study (QIDO-RS "
          f"{short(steps['studies'][0]['path']) if steps.get('studies') else '/studies?…'})")
    check(steps.get("series"), f"{what}: OHIF searched the study's series (QIDO-RS "
          f"/studies/{{study}}/series)")
    check(steps.get("metadata"), f"{what}: OHIF fetched the metadata (WADO-RS "
          f"{short(steps['metadata'][0]['path']) if steps.get('metadata') else '…/metadata'})")
    check(any(series in r["path"] for r in steps.get("metadata", [])),
          f"{what}: the metadata request names the stored series")
    check(steps.get("frames"), f"{what}: OHIF fetched pixel data (WADO-RS "
          f"{short(steps['frames'][0]['path']) if steps.get('frames') else '…/frames/1'}, "
          f"{steps['frames'][0]['type'] if steps.get('frames') else ''})")
    if min_frames > 1:
        check(len(frame_numbers(steps)) >= min_frames,
              f"{what}: OHIF fetched {len(frame_numbers(steps))} of its frames "
              f"(frames/{', '.join(sorted(frame_numbers(steps), key=int)[:6])}…)")
    check(canvases, f"{what}: the viewport has a cornerstone canvas "
          f"({', '.join('%dx%d' % (c['w'], c['h']) for c in canvases)})")
    good = rendered(canvases)
    check(good, f"{what}: the canvas shows an image, not a blank fill "
          + (f"(pixel values {good[0]['min']}..{good[0]['max']}, {good[0]['distinct']} distinct, "
             f"{good[0]['lit']:.0%} non-black)" if good else f"({canvases})"))
    with PROXIED_LOCK:
        bad = [r for r in PROXIED if r["status"] >= 400]
    check(not bad, f"{what}: every proxied DICOMweb request was answered without an error "
          f"({len(PROXIED)} requests)")


def short(path):
    """A request path (and query) with the stored files' UIDs replaced by placeholders."""
    names = {}
    for study, series, instance in studies.values():
        names.update({study: "{study}", series: "{series}", instance: "{instance}"})
    for uid in sorted(names, key=len, reverse=True):
        path = path.replace(uid, names[uid])
    return path.removeprefix("/dicom-web")


DRIVER = start_browser()
try:
    caps = DRIVER.capabilities
    print(f"   (browser: {caps.get('browserName')} {caps.get('browserVersion')}, chromedriver "
          f"{caps.get('chrome', {}).get('chromedriverVersion', '?').split(' ')[0]})", flush=True)
    view("CT_small.dcm", "CT study")
    view("MR_small.dcm", "MR study")
    view("examples_ybr_color.dcm", "multi-frame JPEG US study", min_frames=2)
    drain_console()
    verbose = os.environ.get("HUB_TEST_OHIF_VERBOSE")
    shown = [e for e in CONSOLE if verbose or e.get("level") == "SEVERE"]
    if shown:
        print("   (browser console" + ("" if verbose else " errors, not fatal") + ":)")
        for e in shown:
            print(f"     {e.get('level')} {e.get('message')[:400]}")
finally:
    quit_browser()
    httpd.shutdown()

print("all checks passed")
