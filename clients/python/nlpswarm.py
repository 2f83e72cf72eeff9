#!/usr/bin/python3
"""Client of nlpswarm's customer API (the gateway), standard library only.

One file: copy it next to your program, or run it as a command.

    import nlpswarm
    c = nlpswarm.Client("http://gateway:8080", "nlp_...")
    c.sentiment("sentiment", "i love this movie")
    # {'scored_labels': [{'label': 'POSITIVE', 'score': 0.99}, ...]}
    c.entities("ner", ["Alice flew home", "Bob stayed"])  # a list: one answer each

    job = c.create_job("sentiment", "sentiment", texts, webhook="https://example.com/hook")
    c.wait_job(job["id"]); answers = list(c.job_results(job["id"]))   # asynchronous jobs
    nlpswarm.verify_webhook(secret, headers["Nlpswarm-Signature"], raw_body)  # in the receiver

    python3 nlpswarm.py --url http://gateway:8080 --key nlp_... sentiment sentiment "i love this movie"

A 429 or 503 with Retry-After is retried after that many seconds (at most
`retries` times, never past `timeout` in all); other refusals raise
nlpswarm.Error with the API's code (listed with their meaning at the
gateway's /docs). The request and answer shapes are the gateway's
(internal/customerapi, /openapi.yaml).
"""

import argparse
import email.utils
import hashlib
import hmac
import json
import os
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["Client", "Error", "TASKS", "verify_webhook"]

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

    # Asynchronous jobs (the gateway's /v1/jobs routes).

    def create_job(self, model, task, texts, parameters=None, webhook=None):
        """Submits a job of up to 100,000 texts; returns the job (state queued)."""
        body = {"model": model, "task": task, "texts": list(texts)}
        if parameters is not None:
            body["parameters"] = parameters
        if webhook:
            body["webhook"] = webhook
        return self._post("/v1/jobs", body)

    def get_job(self, job_id):
        """The job: state, done/failed/total, results and errors URLs, webhook."""
        return self._call("GET", "/v1/jobs/" + urllib.parse.quote(job_id, safe=""))

    def cancel_job(self, job_id):
        return self._call("POST", "/v1/jobs/" + urllib.parse.quote(job_id, safe="") + "/cancel")

    def wait_job(self, job_id, interval=1.0, timeout=3600.0):
        """Polls the job until it has finished (succeeded or cancelled)."""
        end = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["state"] in ("succeeded", "cancelled"):
                return job
            if time.monotonic() + interval > end:
                raise TimeoutError(f"nlpswarm: job {job_id} still {job['state']}")
            time.sleep(interval)

    def job_results(self, job_id, limit=1000, errors=False):
        """Yields the job's answered (or, errors=True, dead-lettered) texts in index order, page by page."""
        path = "/v1/jobs/" + urllib.parse.quote(job_id, safe="") + ("/errors" if errors else "/results")
        after = -1
        while True:
            lines = self._call("GET", f"{path}?after={after}&limit={int(limit)}", jsonl=True)
            if not lines:
                return
            for item in lines:
                after = item["index"]
                yield item

    def webhook_secret(self, rotate=False):
        """The account's webhook signing secret (rotate: a new one first)."""
        if rotate:
            return self._call("POST", "/v1/jobs/webhook-secret/rotate")["secret"]
        return self._call("GET", "/v1/jobs/webhook-secret")["secret"]

    def _call(self, method, path, jsonl=False):
        return self._once(path, None, time.monotonic() + self.timeout, method=method, jsonl=jsonl)

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

    def _once(self, path, data, deadline, method="POST", jsonl=False):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"nlpswarm: {method} {path}: no time left")
        headers = {"Authorization": "Token " + self.key, "User-Agent": "nlpswarm-python-client"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=left) as resp:
                raw = resp.read(MAX_ANSWER_BYTES + 1)
                if len(raw) > MAX_ANSWER_BYTES:
                    raise ValueError(f"nlpswarm: {method} {path}: answer over {MAX_ANSWER_BYTES} bytes")
                if jsonl:
                    return [json.loads(line) for line in raw.splitlines() if line.strip()]
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


def verify_webhook(secret, signature, body, tolerance=300.0, now=None):
    """Checks a job webhook: signature is its Nlpswarm-Signature header
    ("t=<unix seconds>,v1=<hex>"), body its raw bytes, secret the account's
    (Client.webhook_secret). Returns True when v1 is HMAC-SHA256 of
    "<t>.<body>" under secret and t is within tolerance seconds of now."""
    parts = dict(p.strip().split("=", 1) for p in signature.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    want = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, parts.get("v1", "")):
        return False
    return abs((time.time() if now is None else now) - t) <= tolerance


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
