"""Take the picture of the chat page: a conversation, one token clicked, the look inside open.

    python scripts/web_screenshot.py --out_dir=out-chat --message="Who is Ophelia?" --image=docs/web.png

It starts `python chat_web.py` on a free port of 127.0.0.1 for the run folder, opens the page
in headless Chromium (gpt/web/browser.py: Debian's chromium and chromium-driver, selenium from
the web extra), sends each --message at temperature 0 (replies of --max_tokens) and waits for
its reply, clicks the token --pick tokens from the end of the conversation (default: the last
reply's middle) and the head --head=LAYER,HEAD (default: the model's first induction head,
else its last head), and saves the window as a PNG.

Left out: pictures of several states, other window sizes than --width x --height.
"""
import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gpt.web import browser  # noqa: E402

WAIT_S = 120  # the longest wait for a reply


def wait_for(driver, script):
    """The first truthy value of the JavaScript expression `script`, polled for at most WAIT_S."""
    end = time.monotonic() + WAIT_S
    while time.monotonic() < end:
        if value := driver.execute_script("return " + script):
            return value
        time.sleep(0.05)
    raise SystemExit(f"error: the page did not show {script} within {WAIT_S} s")


def take(driver, url, args):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    driver.get(url)
    wait_for(driver, "document.getElementById('status').textContent === 'Ready.'")
    driver.execute_script("document.getElementById('temperature').value = 0;"
                          "document.getElementById('temperature').dispatchEvent(new Event('input'));")
    if args.max_tokens:
        driver.execute_script(f"document.getElementById('max-tokens').value = {args.max_tokens};")
    for k, message in enumerate(args.message, 1):
        driver.find_element(By.ID, "input").send_keys(message, Keys.ENTER)
        wait_for(driver, f"document.querySelectorAll('.msg.assistant[data-reason]').length === {k} && "
                         "document.querySelectorAll('.tok').length > 0")
    tokens = driver.find_elements(By.CSS_SELECTOR, ".tok")
    reply = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1].find_elements(By.CSS_SELECTOR, ".tok")
    (tokens[-args.pick] if args.pick else reply[len(reply) // 2]).click()
    heads = driver.execute_script("return state.health.heads.induction")
    layer, head = (map(int, args.head.split(",")) if args.head else heads[0] if heads
                   else driver.execute_script("return [state.health.n_layer - 1, state.health.n_head - 1]"))
    driver.find_element(By.CSS_SELECTOR, f"td.head[data-layer='{layer}'][data-head='{head}']").click()
    time.sleep(0.3)  # let the page paint
    driver.save_screenshot(args.image)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out_dir", default="out-chat", help="the run folder chat_web.py serves")
    ap.add_argument("--message", action="append", required=True, help="a message to send (repeat for more)")
    ap.add_argument("--max_tokens", type=int, default=0, help="the page's max tokens (0: its default)")
    ap.add_argument("--pick", type=int, default=0, help="click the token this far from the end (0: mid-reply)")
    ap.add_argument("--head", default="", help="LAYER,HEAD to shade by (default: an induction head)")
    ap.add_argument("--image", default=os.path.join("docs", "web.png"))
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=860)
    args = ap.parse_args()
    if reason := browser.missing():
        raise SystemExit(f"error: {reason}")
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "chat_web.py"), f"--out_dir={args.out_dir}",
                               "--port=0", "--quiet=true"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = server.stdout.readline()  # "serving ... at http://127.0.0.1:PORT"
        if "http://" not in line:
            raise SystemExit("error: chat_web.py did not start (its error is above)")
        with browser.chromium(args.width, args.height) as driver:
            take(driver, line[line.index("http://"):].strip(), args)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.image}")


if __name__ == "__main__":
    main()
