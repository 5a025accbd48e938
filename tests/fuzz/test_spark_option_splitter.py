"""The Spark option splitter (``spark_kernel.split_opts``, also behind the installer's
``builders.split_spark_opts``): for any text, a list of words or ``OptionsRefused``; nothing is
ever evaluated; and the words a start request may add never change what spark-submit runs.

The last property is checked against a model of spark-submit's own parser
(``SparkSubmitOptionParser.parse``, Spark 4): the words run.sh passes (the kernel's name and the
admin's options first, then the request's, then the launcher) must parse to the same name,
master, deploy mode and application, with no identity option set, or make spark-submit exit.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from kernelfleet.launchers import spark_kernel
from kernelfleet.launchers.spark_kernel import OptionsRefused, split_opts
from kernelfleet.specs import builders
from tests.fuzz.strategies import any_text, fuzz_settings

# -- a model of spark-submit's argument parser (SparkSubmitOptionParser, Spark 4.x) -----------

VALUE_OPTIONS = {
    "--archives": "--archives", "--class": "--class", "--conf": "--conf", "-c": "--conf",
    "--deploy-mode": "--deploy-mode", "--driver-class-path": "--driver-class-path",
    "--driver-cores": "--driver-cores",
    "--driver-default-class-path": "--driver-default-class-path",
    "--driver-java-options": "--driver-java-options",
    "--driver-library-path": "--driver-library-path", "--driver-memory": "--driver-memory",
    "--executor-cores": "--executor-cores", "--executor-memory": "--executor-memory",
    "--files": "--files", "--jars": "--jars", "--keytab": "--keytab", "--kill": "--kill",
    "--master": "--master", "--remote": "--remote", "--name": "--name",
    "--num-executors": "--num-executors", "--packages": "--packages",
    "--exclude-packages": "--exclude-packages", "--principal": "--principal",
    "--properties-file": "--properties-file", "--proxy-user": "--proxy-user",
    "--py-files": "--py-files", "--queue": "--queue", "--repositories": "--repositories",
    "--status": "--status", "--total-executor-cores": "--total-executor-cores",
}  # fmt: skip
SWITCHES = {
    "--help": "--help", "-h": "--help", "--supervise": "--supervise",
    "--usage-error": "--usage-error", "--verbose": "--verbose", "-v": "--verbose",
    "--version": "--version", "--load-spark-defaults": "--load-spark-defaults",
}  # fmt: skip
EXITS = {"--help", "--usage-error", "--version"}  # spark-submit prints and exits at once
EQ_OPTION = re.compile(r"(--[^=]+)=(.+)", re.DOTALL)
#: What a request may never set, as an option or as the --conf key that stands for it.
IDENTITY = {"--name", "--master", "--deploy-mode", "--class", "--proxy-user", "--principal",
            "--keytab", "--kill", "--status", "--properties-file", "--remote"}  # fmt: skip


class SparkExits(Exception):
    """spark-submit would print an error or its usage and exit: no kernel, nothing changed."""


def spark_submit_parse(args: list[str]) -> tuple[dict[str, list[str]], str | None]:
    """(every option's values in order, the primary resource) as spark-submit sees *args*."""
    seen: dict[str, list[str]] = {}
    idx = 0
    while idx < len(args):
        arg, value = args[idx], None
        match = EQ_OPTION.fullmatch(arg)
        if match:
            arg, value = match.group(1), match.group(2)
        if arg in VALUE_OPTIONS:
            if value is None:
                if idx == len(args) - 1:
                    raise SparkExits(f"Missing argument for option '{arg}'")
                idx += 1
                value = args[idx]
            seen.setdefault(VALUE_OPTIONS[arg], []).append(value)
        elif arg in SWITCHES:
            if SWITCHES[arg] in EXITS:
                raise SparkExits(arg)
            seen.setdefault(SWITCHES[arg], []).append("")
        elif arg.startswith("-"):
            raise SparkExits(f"Unrecognized option '{arg}'")
        else:
            return seen, arg  # the application; the rest are its own arguments
        idx += 1
    return seen, None


# -- strategies --------------------------------------------------------------------------------

FORBIDDEN_SPELLINGS = [
    "--name", "--master", "--deploy-mode", "--class", "--proxy-user", "--principal", "--keytab",
    "--kill", "--status", "--properties-file", "--master=local[1]", "--name=evil",
    "--deploy-mode=cluster", "--proxy-user=root", "'--master'", '"--name"', "--na''me",
    "\\-\\-master", "--mas\\ter", "'--proxy-user=root'", "-c", "--conf", "--conf=spark.master=x",
    "-c=spark.app.name=x",
]  # fmt: skip
CONF_SETTINGS = [
    "spark.master=local[1]", "spark.app.name=evil", "spark.submit.deployMode=cluster",
    "spark.kerberos.principal=hdfs", "spark.kerberos.keytab=/etc/hdfs.keytab",
    "spark.yarn.principal=x", "spark.executor.memory=2g", "'spark.x=a b'", "spark.x=$(id)",
]  # fmt: skip
tokens = (
    st.sampled_from(FORBIDDEN_SPELLINGS)
    | st.sampled_from(sorted(VALUE_OPTIONS) + sorted(SWITCHES))
    | st.sampled_from(CONF_SETTINGS)
    | st.sampled_from(["yarn", "local[*]", "x", "app.py", "--", "-", "--unknown", "--x=y", "=",
                       "--=x", "$(touch /tmp/kf-fuzz-pwned)", "`id`", "a;b", "'", '"', "\\"])
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=6)
)  # fmt: skip


def quoted(word: str, how: int) -> str:
    return [word, shlex.quote(word), f'"{word}"', "".join(f"\\{c}" for c in word)][how]


allowed = sorted(set(VALUE_OPTIONS) - IDENTITY)
#: Mostly well-formed groups (an option and its value, a switch), with hostile tokens among
#: them: most texts get past the splitter, so the model has something to judge.
values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=6)
option_value = st.tuples(st.sampled_from(allowed), values)
groups = st.one_of(
    option_value.map(list),
    option_value.map(list),
    option_value.map(lambda ov: [f"{ov[0]}={ov[1]}"]),
    option_value.map(lambda ov: [f"{ov[0]}={ov[1]}"]),
    st.tuples(st.sampled_from(allowed), tokens).map(list),
    st.sampled_from(sorted(SWITCHES)).map(lambda s: [s]),
    st.sampled_from(sorted(SWITCHES)).map(lambda s: [s]),
    st.sampled_from(CONF_SETTINGS).map(lambda c: ["--conf", c]),
    tokens.map(lambda t: [t]),
)
option_texts = st.lists(st.tuples(groups, st.integers(0, 3)), max_size=6).map(
    lambda parts: " ".join(quoted(w, how) for group, how in parts for w in group)
)
texts = option_texts | any_text | st.text(max_size=40)


RUNNERS = [(subprocess, "Popen"), (os, "fork"), (os, "system"), (os, "popen")] + [
    (os, name) for name in ("posix_spawn", "posix_spawnp", "execv", "execve", "execvp", "execvpe")
]


@contextmanager
def nothing_may_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any attempt to start a process (or evaluate through a shell) fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the splitter tried to run something: {args!r:.200}")

    with monkeypatch.context() as patch:
        for mod, name in RUNNERS:
            patch.setattr(mod, name, refuse)
        yield


def split(text: str, trusted: bool) -> list[str] | None:
    try:
        words = split_opts(text, "X", trusted)
    except OptionsRefused as exc:
        assert str(exc).startswith("X")
        return None
    assert isinstance(words, list) and all(isinstance(w, str) for w in words)
    return words


# -- properties --------------------------------------------------------------------------------


@fuzz_settings(600)
@given(text=texts, trusted=st.booleans())
def test_any_text_is_words_or_refused_and_nothing_is_evaluated(
    text: str, trusted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    with nothing_may_run(monkeypatch):
        words = split(text, trusted)
        try:
            via_installer = builders.split_spark_opts(text, what="X", trusted=trusted)
        except builders.SpecError as exc:
            assert exc.status == 400
            via_installer = None
    assert via_installer == words  # one implementation for installer and host
    event("refused" if words is None else "split")
    if words is not None:
        assert shlex.split(text) == words  # split like a POSIX shell, nothing expanded
        assert not any(ord(c) < 32 or ord(c) == 127 for c in text)


KID = "6e7d2293-b825-464e-8d0f-a0e77d9e48b4"
ADMIN = ["--master", "spark://m:7077", "--deploy-mode", "client", "--conf", "spark.x=1"]


@fuzz_settings(1500)
@given(text=option_texts)
def test_request_options_never_change_what_spark_submit_runs(text: str) -> None:
    """run.sh: spark-submit --name $KERNEL_ID <SPARK_OPTS> <request options> <launcher> ..."""
    try:
        words = split_opts(text, "X", False)
    except OptionsRefused as exc:
        event("refused: " + re.sub(r"'.*'|--\S+", "…", str(exc)))
        return
    try:
        seen, app = spark_submit_parse(["--name", KID, *ADMIN, *words, "launcher.py", "-f", "c"])
    except SparkExits:
        event("spark-submit exits")
        return
    event("accepted")
    assert app == "launcher.py", (text, words)
    assert seen["--name"] == [KID] and seen["--master"] == ["spark://m:7077"], (text, words)
    assert seen["--deploy-mode"] == ["client"], (text, words)
    assert not IDENTITY - {"--name", "--master", "--deploy-mode"} & seen.keys(), (text, words)
    for setting in seen.get("--conf", []):
        key = setting.split("=", 1)[0].strip()
        assert key not in spark_kernel.SPLITTER_FORBIDDEN_CONF, (text, words)


def test_the_model_knows_the_splitter_lists() -> None:
    """The model's option tables cover what the splitter relies on."""
    assert set(spark_kernel.FLAG_OPTIONS) == set(SWITCHES)
    assert set(spark_kernel.SPLITTER_FORBIDDEN) <= set(VALUE_OPTIONS)


@pytest.mark.parametrize(
    "text",
    [
        # Spark 4's --load-spark-defaults takes no value: the splitter used to take the next
        # word for its value and let it through, and spark-submit then used it (the master
        # moved to local[1]; verified with pyspark 4.3's spark-submit --verbose).
        "--load-spark-defaults --master=local[1]",
        "--load-spark-defaults --proxy-user hdfs",
        "--load-spark-defaults --deploy-mode cluster",
        # the --conf spellings of forbidden options
        "--conf spark.kerberos.principal=hdfs --conf spark.kerberos.keytab=/etc/hdfs.keytab",
        "--conf=spark.master=local[1]",
        "-c spark.app.name=other",
        "--properties-file /tmp/evil.conf",
    ],
)
def test_identity_options_found_by_fuzzing_are_refused(text: str) -> None:
    with pytest.raises(OptionsRefused, match="may not be changed"):
        split_opts(text, "KERNEL_EXTRA_SPARK_OPTS", False)


plain_words = st.text(
    st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=12
).filter(lambda w: w.partition("=")[0] not in spark_kernel.SPLITTER_FORBIDDEN)
allowed_options = st.sampled_from(
    sorted(set(VALUE_OPTIONS) - set(spark_kernel.SPLITTER_FORBIDDEN) - {"-c", "--conf"})
)


@fuzz_settings(400)
@given(
    pairs=st.lists(
        st.tuples(allowed_options, plain_words, st.booleans())
        | st.tuples(st.sampled_from(sorted(SWITCHES)), st.none(), st.just(False)),
        max_size=6,
    )
)
def test_shlex_quoted_options_come_back_word_for_word(
    pairs: list[tuple[str, str | None, bool]],
) -> None:
    words: list[str] = []
    for option, value, inline in pairs:
        if value is None:
            words.append(option)
        elif inline:
            words.append(f"{option}={value}")
        else:
            words += [option, value]
    assert split(shlex.join(words), trusted=False) == words
    assert split(shlex.join(words), trusted=True) == words


@fuzz_settings(300)
@given(words=st.lists(st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=10)))
def test_any_quoted_word_list_comes_back_or_is_refused(words: list[str]) -> None:
    got = split(shlex.join(words), trusted=True)
    assert got is None or got == words
