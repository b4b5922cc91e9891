"""The web page to talk to a model and look inside it: `python chat_web.py` serves it.

    served.py   the model: prompts from messages (chat or plain text), the look inside (attention, logit lens)
    engine.py   the decoding thread: continuous batching, one KV cache per reply, cancellation
    server.py   the HTTP API and the page (static/index.html, one file that needs nothing from outside)

docs/web.md describes the page, the API contract and the measurements.
"""
