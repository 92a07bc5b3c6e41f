"""Mask credentials in text before bridge records or prints it: the one place for the rules.

Why: the command line (``sys.argv``) is recorded in every run's ``system`` event, and from
the spool it is copied to ``bridge export`` and to every backend (MLflow artifacts, W&B
files, Comet archives, Neptune's op log). Backend options are stored in the spool's
``runs`` table, and error messages and dead-letter reasons can quote a URL. A credential in
any of these would be copied to places the user neither controls nor expects.

What is masked (the value becomes ``***``; the name, user and host stay visible so the user
can see that something was there):

* the password of a URL's userinfo, anywhere in a value: ``scheme://user:pass@host`` ->
  ``scheme://user:***@host`` (a user name alone, ``http://alice@host``, is kept);
* the value of a pair whose name looks secret: ``key=value``, ``--key=value``, URL query
  parameters ``?api_key=...``, and quoted ``"password": "..."`` pairs in messages;
* the argument after a command-line flag whose name looks secret (``--auth S``,
  ``--pw S``), and after the short flags in :data:`SECRET_SHORT_FLAGS` (``-p S``);
* ``Bearer <token>``.

A name looks secret when its *last* part - split at ``.``, ``_``, ``-``, ``/`` and
camelCase, case-insensitive - is one of :data:`SECRET_WORDS` (``wandb.api_key``,
``HF_TOKEN``, ``--db-password``, ``apiKey``) or ends with one of :data:`SECRET_SUFFIXES`
(``PGPASSWORD``, ``hftoken``). Only the last part counts, so ``--tokenizer bert``,
``--keyframes 3``, ``--max-tokens 512``, ``--token-file path`` and ``--lr 0.1`` are kept.
Deliberately broad: ``--sort-key name`` or ``-p 8080`` are masked too; hiding a harmless
value in a record costs little, leaking a credential costs a rotation.

Not handled: a password in a URL that contains an unencoded ``/``, ``?`` or ``#`` (such a
URL does not work either), and attached short options such as ``-pSECRET``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "MASK", "SECRET_SHORT_FLAGS", "SECRET_SUFFIXES", "SECRET_WORDS", "is_secret_name",
    "redact_argv", "redact_json", "redact_text", "redact_url", "url_has_credentials",
]

MASK = "***"

SECRET_WORDS: frozenset[str] = frozenset({
    "key", "apikey", "accesskey", "secretkey", "privatekey", "authkey", "token", "secret",
    "password", "passwd", "pass", "passphrase", "pw", "pwd", "auth", "authorization",
    "credential", "credentials", "creds",
})
SECRET_SUFFIXES: tuple[str, ...] = ("password", "passwd", "token", "secret", "apikey")
SECRET_SHORT_FLAGS: frozenset[str] = frozenset({"-p"})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_PARTS = re.compile(r"[._\-/\s]+")
# scheme://user:password@ - the password may hold '@' (greedy to the last one) but not the
# characters that end a URL's authority, so "http://host:5000/a@b" is not mistaken for one.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@'\"]*):"
                       r"(?P<pw>[^\s/?#'\"]*)@")
# name= is found first and the value measured after it, so a value that is not masked
# (``--uri=http://h/?token=S``) is still searched for pairs of its own.
_NAME_EQ = re.compile(r"(?<![\w.])(?P<name>[A-Za-z_][\w.\-]*)=")
_PAIR_VALUE = re.compile(r"[^\s&'\",;)\]}]+")
_QUOTED_PAIR = re.compile(r"(?P<q>[\"'])(?P<name>[\w.\-]+)(?P=q)(?P<sep>\s*:\s*)"
                          r"(?P<vq>[\"'])(?P<value>[^\"']*)(?P=vq)")
_FLAG_VALUE = re.compile(r"(?<!\S)(?P<flag>--?[A-Za-z][\w.\-]*)(?P<sp>[ \t]+)(?P<value>[^\s\-]\S*)")
_BEARER = re.compile(r"\b(?P<word>[Bb]earer)(?P<sp>\s+)(?P<value>[A-Za-z0-9._~+/=\-]+)")
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://\S+")
_FLAG = re.compile(r"--?[A-Za-z][\w.\-]*")
_ASSIGN = re.compile(r"(?P<name>[+~]*[A-Za-z_][\w.\-/]*)=(?P<value>.*)", re.DOTALL)


def is_secret_name(name: str) -> bool:
    """Whether an option, variable or parameter name looks like it holds a credential."""
    spaced = _CAMEL.sub("_", name.lstrip("-+~"))
    parts = [p for p in _PARTS.split(spaced.lower()) if p]
    if not parts:
        return False
    last = parts[-1]
    return last in SECRET_WORDS or last.endswith(SECRET_SUFFIXES)


def _is_secret_flag(flag: str) -> bool:
    """``-p`` and long flags (``--pw``, Go-style ``-token``) whose name looks secret."""
    return flag in SECRET_SHORT_FLAGS or (len(flag.lstrip("-")) > 1 and is_secret_name(flag))


def _mask_pairs(text: str) -> str:
    """``name=value`` anywhere in ``text`` (query strings too): secret-named values masked."""
    out: list[str] = []
    pos = 0
    for m in _NAME_EQ.finditer(text):
        if m.start() < pos or not is_secret_name(m["name"]):
            continue
        value = _PAIR_VALUE.match(text, m.end())
        if value is None:
            continue
        out += [text[pos:m.end()], MASK]
        pos = value.end()
    return "".join(out) + text[pos:]


def redact_url(url: str) -> str:
    """``url`` with the userinfo password and secret-named query values masked."""
    return _mask_pairs(_USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", url))


def url_has_credentials(text: str) -> bool:
    """Whether a URL anywhere in ``text`` carries a password or a secret query parameter."""
    return any(redact_url(m[0]) != m[0] for m in _URL.finditer(text))


def redact_text(text: str) -> str:
    """Free text (an error message, a reason, a value) with every credential form masked."""
    text = redact_url(text)  # URLs, then name=value pairs anywhere
    text = _QUOTED_PAIR.sub(
        lambda m: (f"{m['q']}{m['name']}{m['q']}{m['sep']}{m['vq']}{MASK}{m['vq']}"
                   if is_secret_name(m["name"]) else m[0]), text)
    text = _FLAG_VALUE.sub(
        lambda m: f"{m['flag']}{m['sp']}{MASK}" if _is_secret_flag(m["flag"]) else m[0], text)
    return _BEARER.sub(lambda m: f"{m['word']}{m['sp']}{MASK}", text)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line with credential values masked, one output item per input item.

    ``--name value`` and ``-p value``: the value is masked unless it is itself a long
    option (``--auth --lr 0.1``: ``--auth`` was a switch). ``--name=value`` and
    ``name=value`` (Hydra overrides, environment-style assignments): the whole value is
    masked. Every other item goes through :func:`redact_text` (URLs, embedded pairs).
    """
    out: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next and not arg.startswith("--"):
            out.append(MASK)
            mask_next = False
            continue
        mask_next = False
        if _FLAG.fullmatch(arg):
            mask_next = _is_secret_flag(arg)
            out.append(arg)
            continue
        assign = _ASSIGN.fullmatch(arg.lstrip("-")) if "=" in arg else None
        if assign and is_secret_name(assign["name"]):
            out.append(arg[: len(arg) - len(assign["value"])] + MASK)
            continue
        out.append(redact_text(arg))
    return out


def redact_json(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings) with :func:`redact_text` applied to every
    string, for ``--json`` output that may quote an error or a URL; other values unchanged."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_json(v) for v in value]
    return value
