"""Parser for Heartbeat's authkeys.

    auth 1
    1 sha1 SomeSecret
    2 md5 AnotherSecret
    3 crc
    4 blake2b ModernSecret     (hbd only)

`auth N` picks the key we sign with; every listed key is accepted on
receipt, which is how keys are rotated without downtime.  As in Heartbeat,
a key is one word (anything after it is ignored, with a warning here), and
a file that group or others may read is refused.
"""

from __future__ import annotations

from hbd.core.config import AuthKey, AuthKeys, AuthMethod
from hbd.core.parsing import Problems, content_lines, is_decimal

MAX_KEY_INDEX = 15  # Heartbeat's MAXAUTH is 16 slots
_METHODS = frozenset(m.value for m in AuthMethod)


def parse_authkeys(
    text: str,
    *,
    filename: str = "authkeys",
    mode: int | None = None,
) -> tuple[AuthKeys | None, Problems]:
    """Parse authkeys text; `mode` is the file's st_mode (None skips the check).

    Returns (keys or None when unusable, problems).  Secrets never appear in
    any problem message.
    """
    problems = Problems(filename)
    if mode is not None and mode & 0o044:
        problems.error(
            0,
            f"is readable by group or others (mode {mode & 0o777:o}): "
            f"run 'chmod 600 {filename}'",
        )
    active: int | None = None
    active_line = 0
    keys: dict[int, AuthKey] = {}
    key_lines: dict[int, int] = {}
    for line, content in content_lines(text):
        words = content.split()
        if words[0] == "auth":
            if len(words) != 2 or not is_decimal(words[1]):
                problems.error(line, "expected 'auth N' with N the index of the signing key")
                continue
            if active is not None:
                problems.error(line, f"second auth line (the first is at line {active_line})")
                continue
            active, active_line = int(words[1]), line
            continue
        if not is_decimal(words[0]):
            # Most likely a key that slipped onto its own line: show the word only
            # when it is a method name (the index was forgotten).
            shown = f", got '{words[0]}'" if words[0].lower() in _METHODS else ""
            problems.error(line, f"expected 'auth N' or 'N METHOD [KEY]'{shown}")
            continue
        index = int(words[0])
        if index > MAX_KEY_INDEX:
            problems.error(line, f"key index {index} is out of range (0-{MAX_KEY_INDEX})")
            continue
        if len(words) < 2:
            problems.error(line, f"key {index} has no method (crc, md5, sha1 or blake2b)")
            continue
        try:
            method = AuthMethod(words[1].lower())
        except ValueError:
            # "N KEY" (method forgotten) puts the key here: show it only when a
            # third word, the key, follows it.
            shown = f" '{words[1]}'" if len(words) > 2 else ""
            problems.error(line, f"key {index}: unknown method{shown} (crc, md5, sha1 or blake2b)")
            continue
        secret = words[2] if len(words) > 2 else ""
        if len(words) > 3:
            problems.warning(
                line, f"key {index}: a key is one word; the words after it are ignored"
            )
        if method is AuthMethod.CRC and secret:
            problems.error(line, f"key {index}: crc takes no key")
            continue
        if method is not AuthMethod.CRC and not secret:
            problems.error(line, f"key {index}: {method.value} needs a key")
            continue
        if index in keys:
            problems.error(
                line, f"key index {index} is defined twice (first at line {key_lines[index]})"
            )
            continue
        keys[index] = AuthKey(index=index, method=method, secret=secret.encode())
        key_lines[index] = line
    if active is None:
        problems.error(0, "no 'auth N' line: say which key signs outgoing messages")
    elif active not in keys:
        problems.error(active_line, f"auth {active}: there is no key {active} in this file")
    if problems.errors or active is None:
        return None, problems
    return AuthKeys(active=active, keys=tuple(keys[i] for i in sorted(keys))), problems
