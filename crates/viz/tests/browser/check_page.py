#!/usr/bin/env python3
"""Check an attention.html page (written by llm-viz) in real headless Chromium.

Usage:
    python check_page.py PATH/attention.html [--screenshot OUT.png] [--expect-layers N]

Needs Python 3.9+, Selenium (tested with selenium==4.51.0, `pip install selenium==4.51.0`)
and Debian's `chromium` + `chromium-driver` (/usr/bin/chromium, /usr/bin/chromedriver;
override with --chromium / --chromedriver). Selenium Manager is never run: the driver path
is given explicitly and SE_OFFLINE is set, so nothing is downloaded. Pillow is used to
decode the screenshot when it is installed, else a small PNG decoder below.

The page is loaded from file:// with the network emulated offline (CDP), and every check
prints "ok: ..." or fails with a message and exit status 1:
  * the HTML holds no http(s) src=/href=/url() and no unfilled placeholder;
  * nothing but file:/data:/blob: URLs was requested (resource timing and the CDP log);
  * the console has no warning or error;
  * the page sets data-ready on <body> within 10 s and the canvas is drawn (> 1% ink);
  * the layer selector (or, with one layer, a head toggle) changes the drawing;
  * the matrix view draws, and hovering a cell writes its weight in #status;
  * hovering a token in the line view redraws, and leaving the canvas restores it;
  * #cut-note is shown iff the data has a `cut`; #summary has one row per head;
  * a screenshot of the window size set is not blank.
"""

import argparse
import json
import os
import re
import sys
import time
import zlib
from pathlib import Path

# Before Selenium is imported: never let Selenium Manager reach the network.
os.environ.setdefault("SE_OFFLINE", "true")
os.environ.setdefault("SE_AVOID_STATS", "true")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WIDTH, HEIGHT = 1280, 900
READY_TIMEOUT_S = 10
REDRAW_TIMEOUT_S = 5
LOCAL_SCHEMES = ("file:", "data:", "blob:")


class CheckFailed(Exception):
    pass


def fail(message):
    raise CheckFailed(message)


def ok(message):
    print("ok: " + message, flush=True)


# ---- static checks ------------------------------------------------------------------

DATA_ELEMENT = re.compile(r'<script id="attention-data" type="application/json">(.*?)</script>', re.S)
REMOTE_ATTR = re.compile(r"""\b(?:src|href|action|poster|srcset)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]*)""", re.I)
REMOTE_CSS = re.compile(r"""(?:url\(\s*["']?|@import\s+["']?)\s*((?:https?:)?//[^"')\s]*)""", re.I)


def check_source(html):
    if "__ATTENTION_DATA__" in html or "__TITLE__" in html:
        fail("the page still holds a placeholder (__ATTENTION_DATA__ or __TITLE__): not filled in")
    match = DATA_ELEMENT.search(html)
    if not match:
        fail('no <script id="attention-data" type="application/json"> element')
    try:
        data = json.loads(match.group(1))
    except ValueError as e:
        fail(f"the embedded attention data is not JSON: {e}")
    # The data holds arbitrary token text; only the page around it must be free of URLs.
    page = html[: match.start()] + html[match.end():]
    remote = REMOTE_ATTR.findall(page) + REMOTE_CSS.findall(page)
    if remote:
        fail("the page refers to remote resources: " + ", ".join(sorted(set(remote))))
    ok(f"source: {len(html)} bytes, data embedded as JSON, no remote src/href/url()")
    return data


# ---- the browser --------------------------------------------------------------------


def start_browser(chromium, chromedriver):
    for path in (chromium, chromedriver):
        if not Path(path).is_file():
            fail(f"{path} not found (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},{HEIGHT}",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
        # Chrome's own traffic: none of it is wanted (and it would count as a request).
        "--disable-background-networking",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--metrics-recording-only",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(executable_path=chromedriver)
    return webdriver.Chrome(service=service, options=options)


def go_offline(driver):
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    # The viewport is exactly WIDTH×HEIGHT whatever headless makes of --window-size.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
    )


def console_problems(driver):
    return [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "WARNING")]


def check_console(driver, when):
    problems = console_problems(driver)
    if problems:
        lines = "\n".join(f"  {e['level']}: {e['message']}" for e in problems)
        fail(f"console {when}:\n{lines}")
    ok(f"no console warnings or errors {when}")


def requested_urls(driver):
    urls = set(driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".concat(performance.getEntriesByType('navigation').map(e => e.name));"))
    for entry in driver.get_log("performance"):
        try:
            message = json.loads(entry["message"])["message"]
        except (KeyError, ValueError):
            continue
        if message.get("method") == "Network.requestWillBeSent":
            urls.add(message["params"]["request"]["url"])
    return sorted(urls)


def check_network(driver):
    urls = requested_urls(driver)
    remote = [u for u in urls if not u.lower().startswith(LOCAL_SCHEMES)]
    if remote:
        fail("the page requested non-local resources:\n" + "\n".join("  " + u for u in remote))
    ok(f"network: only local URLs requested ({len(urls)}: {', '.join(u[:60] for u in urls)})")


# ---- the canvas ---------------------------------------------------------------------

# [width, height, ink pixels, hash of toDataURL()] of the canvas. Ink: not (near-)white
# and not transparent. The copy has willReadFrequently so Chrome logs no readback warning.
CANVAS_DIGEST_JS = """
const c = document.getElementById('attention-canvas');
const copy = document.createElement('canvas');
copy.width = c.width; copy.height = c.height;
const x = copy.getContext('2d', {willReadFrequently: true});
x.drawImage(c, 0, 0);
const d = x.getImageData(0, 0, copy.width, copy.height).data;
let ink = 0;
for (let p = 0; p < d.length; p += 4) {
  if (d[p + 3] > 16 && (d[p] < 235 || d[p + 1] < 235 || d[p + 2] < 235)) ink++;
}
const url = c.toDataURL('image/png');
let h = 0x811c9dc5;
for (let i = 0; i < url.length; i++) { h ^= url.charCodeAt(i); h = Math.imul(h, 16777619) >>> 0; }
return [c.width, c.height, ink, h.toString(16) + ':' + url.length];
"""


def canvas_digest(driver):
    return tuple(driver.execute_script(CANVAS_DIGEST_JS))


def draws(driver):
    value = driver.execute_script("return document.getElementById('attention-canvas').dataset.draws || '0';")
    return int(value)


def wait_redraw(driver, before, what):
    try:
        WebDriverWait(driver, REDRAW_TIMEOUT_S, poll_frequency=0.05).until(lambda d: draws(d) > before)
    except TimeoutException:
        fail(f"the canvas was not redrawn within {REDRAW_TIMEOUT_S} s after {what}")


def check_ink(digest, what):
    w, h, ink, _ = digest
    share = ink / max(1, w * h)
    if share <= 0.01:
        fail(f"{what}: the canvas ({w}x{h}) is almost empty: {share:.2%} of its pixels drawn")
    return share


# The offset from the canvas' in-view centre point (the centre of the part of it inside the
# viewport: WebDriver's origin for element offsets) to (x, y) from its top left corner.
OFFSET_JS = """
const r = arguments[0].getBoundingClientRect();
const cx = Math.floor((Math.max(r.left, 0) + Math.min(r.right, window.innerWidth)) / 2);
const cy = Math.floor((Math.max(r.top, 0) + Math.min(r.bottom, window.innerHeight)) / 2);
return [r.left + arguments[1] - cx, r.top + arguments[2] - cy];
"""


def hover_canvas(driver, x, y):
    """Move the mouse to (x, y) CSS pixels from the canvas' top left corner."""
    canvas = driver.find_element(By.ID, "attention-canvas")
    dx, dy = driver.execute_script(OFFSET_JS, canvas, x, y)
    ActionChains(driver).move_to_element_with_offset(canvas, round(dx), round(dy)).perform()


def leave_canvas(driver):
    """Move the mouse to the viewport's top left corner: page margin, never the canvas."""
    action = ActionBuilder(driver)
    action.pointer_action.move_to_location(2, 2)
    action.perform()


def status_text(driver):
    return driver.find_element(By.ID, "status").text.strip()


# ---- the checks ---------------------------------------------------------------------


def check_ready(driver):
    try:
        WebDriverWait(driver, READY_TIMEOUT_S, poll_frequency=0.05).until(
            lambda d: d.execute_script("return !!document.body && document.body.dataset.ready === '1';"))
    except TimeoutException:
        fail(f"the page did not set data-ready=\"1\" on <body> within {READY_TIMEOUT_S} s")
    times = driver.execute_script("""
        const n = performance.getEntriesByType('navigation')[0];
        const m = (name) => performance.getEntriesByName(name).map((e) => Math.round(e.duration))[0];
        return [n ? Math.round(n.domContentLoadedEventEnd) : null, m('attention-parse'), m('attention-first-draw')];
    """)
    ok(f"page ready: DOMContentLoaded {times[0]} ms after navigation start; "
       f"script: JSON parse {times[1]} ms, up to the end of the first draw {times[2]} ms")


def check_layers(driver, data, expect_layers):
    select = Select(driver.find_element(By.ID, "layer"))
    options = select.options
    if len(options) != len(data["layers"]):
        fail(f"#layer has {len(options)} options, the data has {len(data['layers'])} layers")
    if expect_layers is not None and len(options) != expect_layers:
        fail(f"#layer has {len(options)} options, expected {expect_layers}")
    labels = [o.text.strip() for o in options]
    wanted = [f"layer {layer}" for layer in data["layers"]]
    if labels != wanted:
        fail(f"#layer options read {labels}, expected {wanted}")
    if options and select.first_selected_option.get_attribute("value") != str(len(options) - 1):
        fail("the last layer is not selected by default")
    ok(f"#layer lists {len(options)} layer(s), the last selected")
    return select


def check_summary(driver, data, layer_index):
    layer = data["layers"][layer_index] if data["layers"] else None
    entries = [s for s in data.get("summary") or [] if s.get("layer") == layer]
    rows = driver.find_elements(By.CSS_SELECTOR, "#summary tbody tr")
    if entries:
        if len(rows) != len(entries):
            fail(f"#summary has {len(rows)} rows for layer {layer}, the data has {len(entries)} heads")
        first = rows[0].find_elements(By.TAG_NAME, "td")
        if len(first) != 5:
            fail(f"#summary rows have {len(first)} cells, expected 5 (head and 4 scores)")
        ok(f"#summary: {len(rows)} rows (one per head) for layer {layer}")
    else:
        text = driver.find_element(By.ID, "summary").text
        if "no summary" not in text:
            fail(f"#summary should say 'no summary' for layer {layer}, it reads {text!r}")
        ok(f"#summary says 'no summary' for layer {layer}")


def check_drawing_changes(driver, data, select):
    before = canvas_digest(driver)
    n = draws(driver)
    if len(data["layers"]) >= 2:
        select.select_by_index(0)
        what = f"selecting layer {data['layers'][0]}"
    else:
        toggle = driver.find_element(By.CSS_SELECTOR, "input.head-toggle")
        toggle.click()
        what = "toggling a head off"
    wait_redraw(driver, n, what)
    after = canvas_digest(driver)
    if after == before:
        fail(f"the drawing did not change after {what}")
    if len(data["layers"]) >= 2:
        check_ink(after, what)
    ok(f"the drawing changed after {what}")
    if len(data["layers"]) >= 2:
        check_summary(driver, data, 0)
    else:
        n = draws(driver)
        driver.find_element(By.CSS_SELECTOR, "input.head-toggle").click()
        wait_redraw(driver, n, "toggling the head back on")


def check_matrix(driver, data):
    lines = canvas_digest(driver)
    n = draws(driver)
    driver.find_element(By.ID, "view-matrix").click()
    wait_redraw(driver, n, "clicking #view-matrix")
    matrix = canvas_digest(driver)
    if matrix == lines:
        fail("the drawing did not change after clicking #view-matrix")
    share = check_ink(matrix, "matrix view")
    ok(f"matrix view drawn ({matrix[0]}x{matrix[1]} px, {share:.1%} ink)")

    driver.execute_script("document.getElementById('attention-canvas').scrollIntoView({block: 'start'});")
    q = 1 if len(data["tokens"]) > 1 else 0
    cell = driver.execute_script("return window.attentionViewer.cellCenter(0, arguments[0], 0);", q)
    if not cell:
        fail("attentionViewer.cellCenter(0, q, 0) gave no position in the matrix view")
    hover_canvas(driver, cell["x"], cell["y"])
    try:
        WebDriverWait(driver, REDRAW_TIMEOUT_S, poll_frequency=0.05).until(lambda d: "\u2192" in status_text(d))
    except TimeoutException:
        fail(f"hovering matrix cell (query {q}, key 0) left #status as {status_text(driver)!r}")
    ok(f"matrix hover: #status reads {status_text(driver)!r}")
    leave_canvas(driver)


def check_line_hover(driver, data):
    n = draws(driver)
    driver.find_element(By.ID, "view-lines").click()
    wait_redraw(driver, n, "clicking #view-lines")
    driver.execute_script("document.getElementById('attention-canvas').scrollIntoView({block: 'start'});")
    rest = canvas_digest(driver)
    check_ink(rest, "line view")
    t = min(3, len(data["tokens"]) - 1)
    for side in ("query", "key"):
        pos = driver.execute_script("return window.attentionViewer.tokenCenter(arguments[0], arguments[1]);", side, t)
        if not pos:
            fail(f"attentionViewer.tokenCenter('{side}', {t}) gave no position in the line view")
        n = draws(driver)
        hover_canvas(driver, pos["x"], pos["y"])
        wait_redraw(driver, n, f"hovering {side} token {t}")
        hovered = canvas_digest(driver)
        if hovered == rest:
            fail(f"hovering {side} token {t} did not change the line view")
        if not status_text(driver):
            fail(f"hovering {side} token {t} left #status empty")
        n = draws(driver)
        leave_canvas(driver)
        wait_redraw(driver, n, f"leaving the canvas after hovering {side} token {t}")
        if canvas_digest(driver) != rest:
            fail(f"leaving the canvas after hovering {side} token {t} did not restore all lines")
        ok(f"line view: hovering {side} token {t} redraws, leaving restores ({status_text_or(driver)})")


def status_text_or(driver):
    return "#status cleared" if not status_text(driver) else "#status kept: " + status_text(driver)


def check_cut_note(driver, data):
    cut = data.get("cut")
    notes = driver.find_elements(By.ID, "cut-note")
    shown = bool(notes) and notes[0].is_displayed()
    if cut is not None:
        if not shown:
            fail(f"the data has cut={cut} but #cut-note is not visible")
        text = notes[0].text
        if str(cut["shown"]) not in text or str(cut["total"]) not in text:
            fail(f"#cut-note does not give {cut['shown']} of {cut['total']} tokens: {text!r}")
        ok(f"#cut-note visible: {text!r}")
    else:
        if shown:
            fail("the data has no cut but #cut-note is visible")
        ok("#cut-note hidden (nothing cut)")


# ---- the screenshot -----------------------------------------------------------------


def decode_png(png):
    """(width, height, channels, pixel bytes) of an 8-bit, non-interlaced PNG."""
    try:
        from io import BytesIO

        from PIL import Image

        image = Image.open(BytesIO(png)).convert("RGB")
        return image.width, image.height, 3, image.tobytes()
    except ImportError:
        pass
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        fail("the screenshot is not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(png):
        length = int.from_bytes(png[pos:pos + 4], "big")
        kind, body = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    depth, colour, interlace = header[8], header[9], header[12]
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace != 0:
        fail(f"unsupported screenshot PNG (bit depth {depth}, colour type {colour}, interlace {interlace})")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    out = bytearray(height * stride)
    prev = bytearray(stride)
    bpp = channels
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        elif kind != 0:
            fail(f"bad PNG filter type {kind} in row {y}")
        out[y * stride:(y + 1) * stride] = line
        prev = line
    return width, height, channels, bytes(out)


def pixel_std(channels, pixels):
    """Standard deviation of the colour values (alpha left out)."""
    colour = {1: 1, 2: 1, 3: 3, 4: 3}[channels]
    total = count = squares = 0
    for c in range(colour):
        plane = pixels[c::channels]
        for value in range(256):
            n = plane.count(value)
            total += n * value
            squares += n * value * value
            count += n
    mean = total / count
    return (squares / count - mean * mean) ** 0.5


def check_screenshot(driver, path):
    driver.execute_script("window.scrollTo(0, 0);")
    time.sleep(0.2)
    png = driver.get_screenshot_as_png()
    if path:
        Path(path).write_bytes(png)
    width, height, channels, pixels = decode_png(png)
    if (width, height) != (WIDTH, HEIGHT):
        fail(f"the screenshot is {width}x{height}, the window is {WIDTH}x{HEIGHT}")
    std = pixel_std(channels, pixels)
    if std < 8:
        fail(f"the screenshot looks blank (pixel standard deviation {std:.1f})")
    saved = f", saved to {path}" if path else ""
    ok(f"screenshot {width}x{height}, pixel standard deviation {std:.1f}{saved}")


# ---- main ---------------------------------------------------------------------------


def run(args):
    page = Path(args.page).resolve()
    if not page.is_file():
        fail(f"{page} does not exist")
    data = check_source(page.read_text(encoding="utf-8"))
    driver = start_browser(args.chromium, args.chromedriver)
    try:
        go_offline(driver)
        driver.get(page.as_uri())
        check_ready(driver)
        check_console(driver, "after loading")
        page_data = driver.execute_script(
            "return JSON.parse(document.getElementById('attention-data').textContent);")
        if page_data != data:
            fail("the page parses different data from its attention-data element than Python does")
        check_network(driver)

        first = canvas_digest(driver)
        share = check_ink(first, "first draw")
        ok(f"canvas drawn ({first[0]}x{first[1]} px, {share:.1%} ink)")
        check_cut_note(driver, data)
        select = check_layers(driver, data, args.expect_layers)
        check_summary(driver, data, len(data["layers"]) - 1)
        if not data["tokens"] or not data["layers"]:
            ok("no attention to draw: interaction checks skipped")
        else:
            check_drawing_changes(driver, data, select)
            check_matrix(driver, data)
            if args.matrix_screenshot:
                driver.execute_script("window.scrollTo(0, 0);")
                Path(args.matrix_screenshot).write_bytes(driver.get_screenshot_as_png())
            check_line_hover(driver, data)
        check_screenshot(driver, args.screenshot)
        check_console(driver, "after all interactions")
        check_network(driver)
    except CheckFailed:
        if args.screenshot:
            try:
                Path(args.screenshot).write_bytes(driver.get_screenshot_as_png())
            except WebDriverException:
                pass
        raise
    finally:
        driver.quit()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", help="the attention.html to check")
    parser.add_argument("--screenshot", metavar="OUT.png", help="save the screenshot (line view) here")
    parser.add_argument("--matrix-screenshot", metavar="OUT.png", help="also save one of the matrix view")
    parser.add_argument("--expect-layers", type=int, metavar="N", help="the number of layers the page must offer")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()
    start = time.monotonic()
    try:
        run(args)
    except CheckFailed as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        return 1
    except WebDriverException as e:
        print(f"FAIL: browser error: {e.msg or e}", file=sys.stderr, flush=True)
        return 1
    print(f"all browser checks passed ({time.monotonic() - start:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
