#!/usr/bin/python3
"""Render chat templates with Jinja2 the way Hugging Face's transformers does
(apply_chat_template: an immutable sandbox with trim_blocks and lstrip_blocks,
raise_exception, strftime_now, tojson), for tests/client_chat.

Reads a JSON list of jobs on stdin, each {"template": PATH, "messages": [{"role",
"content"}], "add_generation_prompt": bool, "bos_token": str, "eos_token": str}, and
writes per job a record "T LEN\n" + the text's LEN UTF-8 bytes + "\n", or "E LEN\n" +
the error + "\n" when the template raised.
Exits 77 (skip) when Jinja2 is missing (Debian: python3-jinja2, tools/deps.sh)."""
import datetime
import json
import sys

try:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    print("python3-jinja2 is not installed (tools/deps.sh)", file=sys.stderr)
    sys.exit(77)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(value, indent=None, ensure_ascii=False, sort_keys=False):
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


def strftime_at(now):
    """strftime_now at a given time (seconds since the epoch, local time), or the clock."""
    if now is None:
        return lambda fmt: datetime.datetime.now().strftime(fmt)
    return lambda fmt: datetime.datetime.fromtimestamp(now).strftime(fmt)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env


def main():
    env = environment()
    out = sys.stdout.buffer
    for job in json.load(sys.stdin):
        with open(job["template"], encoding="utf-8") as f:
            source = f.read()
        try:
            text = env.from_string(source).render(
                messages=job["messages"],
                add_generation_prompt=job["add_generation_prompt"],
                bos_token=job["bos_token"], eos_token=job["eos_token"],
                strftime_now=strftime_at(job.get("now")))
            kind, data = b"T", text.encode("utf-8")
        except Exception as e:  # the template's own raise_exception, or its limits
            kind, data = b"E", ("%s: %s" % (type(e).__name__, e)).encode("utf-8")
        out.write(kind + b" %d\n" % len(data) + data + b"\n")
    out.flush()


if __name__ == "__main__":
    main()
