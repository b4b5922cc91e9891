"""The chat page in a real browser: headless Chromium (Debian's) driven by Selenium, against servers
on free loopback ports: a reply grows in before it is done, Stop ends a long one, a click on a token
shows attention values equal to run_with_cache's, and a plain-text model's page says what it does.

Skipped, with the reason, where chromium, chromedriver or selenium is missing (.ci/run installs
them; `pip install -e '.[web]'` brings selenium). Every wait here is bounded.
"""
import os
import sys
import threading
import time

import numpy as np
import pytest

import nanograd as ng
from gpt.chat.reply import generate_reply
from gpt.model import GPT, GPTConfig
from gpt.tokenizer import CharTokenizer
from gpt.web import browser
from gpt.web.served import ServedModel
from gpt.web.server import make_server

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "gpt"))
from tiny_chat import ALPHABET, chat_model  # noqa: E402

HEADS = {"previous_token": [[0, 1]], "induction": [[1, 0]]}
WAIT_S = 30  # the longest any one wait for the page may take


def serve(model, tokenizer):
    server = make_server(ServedModel(model, tokenizer, "test", HEADS), "127.0.0.1", 0, quiet=True,
                         max_new_tokens=240)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def chat_server():
    model, template = chat_model()
    server = serve(model, template.tokenizer)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def plain_server(chat_server):
    """An untrained model with no end token, wide enough that 240 tokens take a while to stream.

    It starts after chat_server, whose model trains first: no_grad is global, and a server
    decoding (in inference mode) beside a model that trains would turn off its gradients."""
    tokenizer = CharTokenizer.train(ALPHABET)
    ng.manual_seed(0)
    model = GPT(GPTConfig(block_size=256, vocab_size=tokenizer.vocab_size, n_layer=4, n_head=4, n_embd=128))
    server = serve(model.eval(), tokenizer)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def driver():
    with browser.chromium() as d:
        yield d


def url(server):
    return "http://%s:%d/" % server.server_address[:2]


def wait_for(driver, script, timeout=WAIT_S):
    """The first truthy value of the JavaScript expression `script`, polled every 20 ms."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script("return " + script)
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for: {script}")


def open_page(driver, server):
    driver.get(url(server))
    wait_for(driver, "document.getElementById('status').textContent === 'Ready.'")


def send(driver, text, max_tokens):
    """Type `text` into the page and press Enter, with max tokens set to `max_tokens`."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    field = driver.find_element(By.ID, "max-tokens")
    field.clear()
    field.send_keys(str(max_tokens))
    driver.find_element(By.ID, "input").send_keys(text, Keys.ENTER)


LAST_REPLY = "Array.from(document.querySelectorAll('.msg.assistant')).pop()"


def test_the_reply_grows_in_before_it_is_done(driver, plain_server):
    open_page(driver, plain_server)
    assert "no chat template" in driver.execute_script("return document.getElementById('notice').textContent")
    driver.execute_script("""
        window.lengths = [];
        new MutationObserver(() => {
          const reply = document.querySelector('.msg.assistant.streaming .body');
          if (reply) window.lengths.push(reply.textContent.length);
        }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});""")
    send(driver, "To be", 200)
    wait_for(driver, LAST_REPLY + "?.dataset.reason")
    lengths = driver.execute_script("return window.lengths")
    assert driver.execute_script("return " + LAST_REPLY + ".dataset.reason") == "length"
    assert len({n for n in lengths if n > 0}) >= 2, lengths  # at least two partial texts before the end


def test_stop_ends_a_long_reply(driver, plain_server):
    from selenium.webdriver.common.by import By
    open_page(driver, plain_server)
    send(driver, "Go on", 240)
    wait_for(driver, LAST_REPLY + "?.querySelector('.body').textContent.length > 0")
    driver.find_element(By.ID, "stop").click()
    assert wait_for(driver, LAST_REPLY + ".dataset.reason") == "stopped"
    assert int(driver.execute_script("return " + LAST_REPLY + ".dataset.events")) < 240
    assert driver.execute_script("return document.getElementById('status').textContent").startswith("Stopped.")


def test_new_chat_during_a_reply_stops_it_and_leaves_the_page_empty(driver, plain_server):
    from selenium.webdriver.common.by import By
    open_page(driver, plain_server)
    driver.get_log("browser")  # forget earlier messages
    send(driver, "Go on", 240)
    wait_for(driver, LAST_REPLY + "?.querySelector('.body').textContent.length > 0")
    driver.find_element(By.ID, "new-chat").click()
    wait_for(driver, "document.getElementById('status').textContent === 'New chat.' && "
                     "!document.getElementById('send').hidden")
    time.sleep(0.5)  # the stopped reply's last events and the page's handling of them
    assert driver.execute_script("return document.querySelectorAll('.msg').length") == 0
    assert driver.execute_script("return state.messages.length") == 0
    assert [m for m in driver.get_log("browser") if m["level"] == "SEVERE"] == []


def test_a_clicked_token_shows_the_attention_of_run_with_cache(driver, chat_server):
    from selenium.webdriver.common.by import By
    open_page(driver, chat_server)
    send(driver, "hello", 30)
    wait_for(driver, "document.querySelectorAll('.tok').length > 0")
    served = chat_server.served
    ids = served.template.render([{"role": "user", "content": "hello"},
                                  {"role": "assistant", "content": "Good morrow."}])[0]
    tokens = driver.find_elements(By.CSS_SELECTOR, ".tok")
    assert "".join(t.get_attribute("textContent") for t in tokens) == served.tokenizer.decode(ids)
    _, cache = served.model.run_with_cache(np.array([ids]))
    position = len(ids) - 3  # a token inside the reply
    tokens[position].click()
    for layer, head in [(1, 0), (0, 1)]:
        driver.find_element(By.CSS_SELECTOR, f"td.head[data-layer='{layer}'][data-head='{head}']").click()
        shown = [float(t.get_attribute("data-weight")) for t in tokens[:position + 1]]
        np.testing.assert_allclose(shown, cache[f"blocks.{layer}.attn.pattern"][0, head, position, :position + 1],
                                   atol=1e-5)
        assert all(t.get_attribute("data-weight") == "" for t in tokens[position + 1:])
    labels = {c.get_attribute("data-layer") + c.get_attribute("data-head"): c.find_element(By.CSS_SELECTOR, ".lab").text
              for c in driver.find_elements(By.CSS_SELECTOR, "td.head") if c.find_elements(By.CSS_SELECTOR, ".lab")}
    assert labels == {"10": "IND", "01": "PREV"}
    assert len(driver.find_elements(By.CSS_SELECTOR, "#lens tr")) == served.model.config.n_layer + 1


def test_a_second_message_is_answered_with_the_whole_conversation_and_new_chat_clears_it(driver, chat_server):
    from selenium.webdriver.common.by import By
    open_page(driver, chat_server)
    driver.execute_script("const t = document.getElementById('temperature'); t.value = '0';"
                          "t.dispatchEvent(new Event('input'));")  # greedy, to compare with generate_reply
    send(driver, "hi", 30)
    # the first reply is over before the second starts: a reply decoded alone is generate's exact arithmetic
    # (two in one batch may break a near-tie the other way)
    wait_for(driver, "document.querySelectorAll('.msg.assistant[data-reason]').length === 1")
    send(driver, "hello", 30)
    wait_for(driver, "document.querySelectorAll('.msg.assistant[data-reason]').length === 2 && "
                     "document.querySelectorAll('.msg.tokens').length === 4")
    served = chat_server.served
    replies = [driver.execute_script(f"return state.messages[{k}].content") for k in (1, 3)]
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": replies[0]},
                {"role": "user", "content": "hello"}]
    assert replies[1] == generate_reply(served.model, served.template, messages, 30)[0]
    shown = "".join(t.get_attribute("textContent") for t in driver.find_elements(By.CSS_SELECTOR, ".tok"))
    assert shown == served.tokenizer.decode(served.template.render(messages + [
        {"role": "assistant", "content": replies[1]}])[0])
    driver.find_element(By.ID, "new-chat").click()
    wait_for(driver, "document.querySelectorAll('.msg').length === 0")
    assert not driver.find_element(By.ID, "inside").is_displayed()
