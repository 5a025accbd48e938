"""Shared Hypothesis settings and strategies for the fuzz tests (untrusted input).

Every fuzz test is derandomized (the same examples on every run, so CI is reproducible) and
keeps no example database; the number of examples is bounded per test so that the whole of
``tests/fuzz`` stays within a few minutes on two shared cores.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


#: Any code point, lone surrogates (``\ud800``) included, which JSON can carry as escapes.
any_char = st.characters(exclude_categories=()) | st.characters(categories=["Cs"])
any_text = st.text(any_char, max_size=24)

#: Text an attacker tries first: shell syntax, path tricks, control and format characters.
HOSTILE_WORDS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\n",
    "\r\n",
    "\t",
    "\x7f",
    "\ud800",
    "\udfff",
    "\udc80",
    "x\ud83d",
    "\u202e",
    "\ufeff",
    "😀",
    "$(touch /tmp/kf-fuzz-pwned)",
    "`touch /tmp/kf-fuzz-pwned`",
    "; touch /tmp/kf-fuzz-pwned",
    "${HOME}",
    "'",
    '"',
    "\\",
    "%00",
    "%",
    "../../../../etc/passwd",
    "/",
    ".",
    "..",
    "-",
    "--",
    "--name",
    "nan",
    "inf",
    "-1",
    "0",
    "1e999",
    "1e-300",
    "0x10",
    "root",
    "admin",
    "6e7d2293-b825-464e-8d0f-a0e77d9e48b4",
)

hostile_text = st.sampled_from(HOSTILE_WORDS) | any_text | st.text(max_size=8)


def repeat(piece: str, size: int) -> str:
    return piece * size


#: Long values around the byte limits (multi-byte characters make bytes differ from chars).
huge_text = st.builds(
    repeat,
    st.sampled_from(["a", "é", "€", "😀", "\ud800"]),
    st.sampled_from([1023, 4097, 16385, 32760, 43690, 65536, 131040, 131071, 131072, 131073]),
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities too: Python's JSON writes and reads them
    | hostile_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=6,
)
