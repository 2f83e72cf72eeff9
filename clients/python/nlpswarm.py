#!/usr/bin/python3
"""Client of nlpswarm's customer API (the gateway), standard library only.

One file: copy it next to your program, or run it as a command.

    import nlpswarm
    c = nlpswarm.Client("http://gateway:8080", "nlp_...")
    c.sentiment("sentiment", "i love this movie")
    # {'scored_labels': [{'label': 'POSITIVE', 'score': 0.99}, ...]}
    c.entities("ner", ["Alice flew home", "Bob stayed"])  # a list: one answer each

    python3 nlpswarm.py --url http://gateway:8080 --key nlp_... sentiment sentiment "i love this movie"

A 429 or 503 with Retry-After is retried after that many seconds (at most
`retries` times, never past `timeout` in all); other refusals raise
nlpswarm.Error with the API's code (listed with their meaning at the
gateway's /docs). The request and answer shapes are the gateway's
(internal/customerapi, /openapi.yaml).
"""

import argparse
import email.utils
import json
import os
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["Client", "Error", "TASKS"]

TASKS = ("sentiment", "classification", "entities", "embeddings")
MAX_ANSWER_BYTES = 64 << 20


class Error(Exception):
    """An error answer of the API: status, code, message, request_id, retry_after (seconds or None)."""

    def __init__(self, status, code, message, request_id="", retry_after=None):
        super().__init__(f"nlpswarm: {status} {code}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.status, self.code, self.message = status, code, message
        self.request_id, self.retry_after = request_id, retry_after

    @property
    def retryable(self):
        return self.status in (429, 503)


def _retry_after(value):
    if not value:
        return None
    try:
        return max(float(int(value)), 0.0)
    except ValueError:
        pass
    try:
        return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


class Client:
    """Calls one gateway with one API key.

    retries: how many times a 429 or 503 is retried; backoff: the first wait
    when the answer has no Retry-After (doubled each try, with jitter);
    max_wait: the longest Retry-After worth waiting for (a monthly quota
    used up is not); timeout: seconds for a whole call, retries included.
    """

    def __init__(self, base_url, key, retries=4, backoff=0.2, max_wait=30.0, timeout=60.0):
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ValueError(f"base URL {base_url!r}: want http(s)://host[:port]")
        if not key or any(c in key for c in " \r\n"):
            raise ValueError("an API key (one word) is required")
        self.base_url, self.key = base_url.rstrip("/"), key
        self.retries, self.backoff, self.max_wait, self.timeout = retries, backoff, max_wait, timeout

    def run(self, model, task, texts, parameters=None):
        """Runs task on model: texts is one string (one answer) or a list (a list of answers, in order)."""
        body = {"texts": list(texts)} if isinstance(texts, (list, tuple)) else {"text": texts}
        if parameters is not None:
            body["parameters"] = parameters
        path = "/v1/" + urllib.parse.quote(model, safe="") + "/" + urllib.parse.quote(task, safe="")
        answer = self._post(path, body)
        return answer["results"] if "texts" in body else answer

    def sentiment(self, model, texts, parameters=None):
        return self.run(model, "sentiment", texts, parameters)

    def classify(self, model, texts, parameters=None):
        return self.run(model, "classification", texts, parameters)

    def entities(self, model, texts, parameters=None):
        return self.run(model, "entities", texts, parameters)

    def embed(self, model, texts, parameters=None):
        return self.run(model, "embeddings", texts, parameters)

    def infer(self, model, request):
        """Open Inference Protocol v2: posts request (a dict) to /v2/models/{model}/infer."""
        return self._post("/v2/models/" + urllib.parse.quote(model, safe="") + "/infer", request)

    def _post(self, path, body):
        data = json.dumps(body).encode()
        deadline = time.monotonic() + self.timeout
        tries = 0
        while True:
            try:
                return self._once(path, data, deadline)
            except Error as e:
                if not e.retryable or tries >= self.retries:
                    raise
                wait = e.retry_after
                if wait is None:
                    wait = min(self.backoff * (2 ** tries), self.max_wait)
                    wait = wait / 2 + random.uniform(0, wait / 2)
                if wait > self.max_wait or time.monotonic() + wait >= deadline:
                    raise
                time.sleep(wait)
                tries += 1

    def _once(self, path, data, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"nlpswarm: POST {path}: no time left")
        req = urllib.request.Request(self.base_url + path, data=data, method="POST", headers={
            "Authorization": "Token " + self.key, "Content-Type": "application/json",
            "User-Agent": "nlpswarm-python-client"})
        try:
            with urllib.request.urlopen(req, timeout=left) as resp:
                raw = resp.read(MAX_ANSWER_BYTES + 1)
                if len(raw) > MAX_ANSWER_BYTES:
                    raise ValueError(f"nlpswarm: POST {path}: answer over {MAX_ANSWER_BYTES} bytes")
                return json.loads(raw)
        except urllib.error.HTTPError as resp:
            raw = resp.read(64 << 10)
            code, message = "", raw.decode("utf-8", "replace").strip()[:200] or resp.reason
            try:
                err = json.loads(raw)["error"]
                code, message = err["code"], err["message"]
            except (ValueError, KeyError, TypeError):
                pass
            raise Error(resp.code, code, message, resp.headers.get("X-Request-ID", ""),
                        _retry_after(resp.headers.get("Retry-After"))) from None


def main(argv=None):
    p = argparse.ArgumentParser(description="Run a task of nlpswarm's customer API; prints the answer as JSON.")
    p.add_argument("--url", default=os.environ.get("NLPSWARM_URL", "http://127.0.0.1:8080"), help="the gateway (env NLPSWARM_URL)")
    p.add_argument("--key", default=os.environ.get("NLPSWARM_KEY", ""), help="an inference API key (env NLPSWARM_KEY)")
    p.add_argument("--retries", type=int, default=4)
    p.add_argument("--parameters", type=json.loads, help="a JSON object for the model")
    p.add_argument("model")
    p.add_argument("task", choices=TASKS)
    p.add_argument("text", nargs="+", help="one text (one answer) or several (a list of answers)")
    a = p.parse_args(argv)
    try:
        c = Client(a.url, a.key, retries=a.retries)
        out = c.run(a.model, a.task, a.text[0] if len(a.text) == 1 else a.text, a.parameters)
    except Error as e:
        print(json.dumps({"error": {"status": e.status, "code": e.code, "message": e.message, "request_id": e.request_id}}), file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"nlpswarm: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
