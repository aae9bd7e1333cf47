"""The regex filters and tests of templates: `re`'s results, within the render's time limit.

wodmail runs them on the `regex` module (it can time out and lets other threads run while
it matches); these tests hold it to what Python's `re` (Ansible's engine) gives, and to the
limit. The byte-for-byte check against ansible-core is in test_ansible_differential.py
(the fixture's tools/helper.py).
"""

from __future__ import annotations

import re
import time
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.exceptions import SecurityError

from wodmail.errors import TemplateError
from wodmail.templating import budget, regexes
from wodmail.templating.renderer import Renderer

NAME = "WKSHP-X/2-Creds.ipynb"
# Exponential for re and for regex alike (about a minute for either): a run of 'a' that the
# pattern can split in Fibonacci(n) ways, then a 'b' that makes every split fail.
CATASTROPHIC = "('a' * 40 + 'b')"


@pytest.mark.parametrize(
    ("template", "what"),
    [
        (f"{{{{ {CATASTROPHIC} | regex_search('(a|aa)+$') }}}}", "regex_search"),
        (f"{{{{ {CATASTROPHIC} | regex_replace('(a|aa)+$', 'x') }}}}", "regex_replace"),
        (f"{{{{ {CATASTROPHIC} | regex_findall('(a|aa)+$') }}}}", "regex_findall"),
        (f"{{{{ {CATASTROPHIC} is match('(a|aa)+$') }}}}", "the 'match' test"),
        (f"{{% if {CATASTROPHIC} is search('(a|aa)+$') %}}x{{% endif %}}", "the 'search' test"),
        (f"{{{{ {CATASTROPHIC} is regex('(a|aa)+$') }}}}", "the 'regex' test"),
    ],
)
def test_a_catastrophic_pattern_fails_its_file_naming_the_filter(template, what):
    renderer = Renderer({}, time_limit_seconds=1)
    started = time.monotonic()
    with pytest.raises(TemplateError) as failure:
        renderer.render(f"line one\n{template}\n", NAME)
    took = time.monotonic() - started
    print(f"{what}: failed after {took:.2f} s (limit 1 s)")
    assert str(failure.value) == (
        f"{NAME}: {what}: the pattern '(a|aa)+$' was still matching when the render's 1 s"
        " limit ran out (catastrophic backtracking) (line 2)"
    )


def test_the_limit_is_the_render_s_time_left_not_a_fresh_one_per_filter():
    renderer = Renderer({}, time_limit_seconds=2)
    template = "".join(
        f"{{{{ {CATASTROPHIC} | regex_search('(a|aa)+$') | default('') }}}}" for _ in range(5)
    )
    with pytest.raises(TemplateError, match="render's 2 s limit ran out"):
        renderer.render(template, NAME)


def test_a_render_whose_time_is_spent_fails_as_such_not_on_an_innocent_pattern():
    with budget.limited(1000, 0.0), pytest.raises(SecurityError) as failure:
        regexes.search("regex_search", "a", "a")
    assert str(failure.value) == "rendering took longer than the 0 s limit"


def test_a_catastrophic_pattern_in_a_variable_value_fails_where_it_is_used():
    renderer = Renderer(
        {"slow": f"{{{{ {CATASTROPHIC} | regex_replace('(a|aa)+$', '') }}}}"},
        time_limit_seconds=1,
    )
    with pytest.raises(TemplateError, match=r"regex_replace: .*\(in the value of 'slow'\)"):
        renderer.render("{{ slow }}", NAME)


def test_the_reported_template_renders_as_under_ansible_without_stalling():
    # `re` backtracks through 2**25 ways here (seconds, holding the GIL); the result is None.
    renderer = Renderer({}, time_limit_seconds=5)
    assert renderer.render("[{{ ('a'*25+'b')|regex_search('(a+)+$') }}]\n", NAME) == "[]\n"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # re reads '[' inside a set as a literal; regex would read a POSIX class.
        ("{{ 'ab:c]d' | regex_findall('[[:alpha:]]+') }}", "[]"),
        ("{{ 'x]' | regex_findall('[^[:digit:]]') }}", "['x]']"),
        # re reads a '{' that is no {m,n} repeat as a literal; regex would match fuzzily.
        ("{{ 'fob foo{e<=1}' | regex_search('(?:foo){e<=1}') }}", "foo{e<=1}"),
        ("{{ 'a{2}' | regex_search('(?x) a{ 2}') }}", "a{2}"),
        ("{{ 'a{}b' | regex_replace('a{}', 'X') }}", "Xb"),
        ("{{ 'aaa' | regex_replace('a{2}', 'X') }}", "Xa"),
        ("{{ 'aaa' | regex_replace('a{,2}', 'X') }}", "XXX"),
        # Comments and named characters are not sets or repeats.
        ("{{ 'ab' | regex_findall('(?x) a  # [not a set\\n b') }}", "['ab']"),
        ("{{ 'a{' | regex_findall('(?#[{)\\\\N{LATIN SMALL LETTER A}{') }}", "['a{']"),
        ("{{ 'a[ b' | regex_findall('(?x: a \\\\[ # [\\n ) b') }}", "['a[ b']"),
        ("{{ 'Ab' | regex_replace('(?P<first>a)', '<\\\\g<first>>', ignorecase=True) }}",
         "<A>b"),
    ],
)
def test_patterns_regex_reads_differently_match_as_re_reads_them(template, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # re's, about the nested sets
        assert Renderer({}).render(template, NAME) == expected


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("{{ 'a' | regex_replace('(a', 'x') }}", "missing ), unterminated subpattern"),
        ("{{ 'a' | regex_replace('a', '\\\\x41') }}", "bad escape \\x at position 0"),
        ("{{ 'a' | regex_replace('(a)', '\\\\2') }}", "invalid group reference 2"),
        ("{{ 'a' | regex_search('(?<=a+)b') }}", "look-behind requires fixed-width pattern"),
        ("{{ 'a' | regex_search('\\\\p{L}') }}", "bad escape \\p"),
    ],
)
def test_what_re_refuses_is_refused_with_re_s_words(template, error):
    with pytest.raises(TemplateError) as failure:
        Renderer({}).render(template, NAME)
    # re's own words, under the name of its exception (Python 3.13 calls `error` PatternError)
    assert str(failure.value).startswith(f"{NAME}: {re.error.__name__}: {error}")


# Pieces that exercise sets, repeats, braces, escapes, groups, flags and comments.
_PIECES = [
    "a", "b", "A", "[", "]", "^", "$", ":", "alpha:", "digit:", "{", "}", ",", "1", "2",
    "e<=1", "\\", "(", ")", "?", "x", "#", "\n", " ", "|", "*", "+", "-", ".", "(?x)",
    "(?i)", "(?x:", "(?-x:", "(?#", "\\N{LATIN SMALL LETTER A}", "\\d", "\\w", "\\b",
    "&&", "--", "||", "~~", "(?P<n>", "(?P=n)", "(?:", "(?=", "(?!", "(?<=", "(?>", "\\[",
    "\\{", "\\]", "s", "\\s",
]
_SUBJECTS = ["", "a", "aab", "a:b]", "{e<=1}", "a{1,2}", "x y", "[a]", "A1 b2", "aa\nbb",
             "a b#c", "]{", "alpha:", "~&|-", "\u212a s"]


def _outcome(run):
    try:
        return run()
    except Exception as exc:  # the same exception type (re's message checked above)
        return type(exc)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(_PIECES), min_size=1, max_size=7).map("".join),
    st.sampled_from([0, re.IGNORECASE, re.MULTILINE, re.IGNORECASE | re.MULTILINE]),
    st.sampled_from(_SUBJECTS),
    st.sampled_from(["<\\g<0>>", "\\1", "[\\g<n>]", "x"]),
)
def test_every_pattern_re_accepts_gives_re_s_results(pattern, flags, subject, replacement):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            re.compile(pattern, flags)
        except re.error:
            return
        assert _outcome(lambda: regexes.findall("t", pattern, subject, flags)) == _outcome(
            lambda: re.findall(pattern, subject, flags))
        assert _outcome(lambda: regexes.subn("t", pattern, replacement, subject, flags)) == (
            _outcome(lambda: re.subn(pattern, replacement, subject, flags=flags)))
        for ours, theirs in ((regexes.search, re.search), (regexes.match, re.match)):
            found = _outcome(lambda ours=ours: ours("t", pattern, subject, flags))
            expected = _outcome(lambda theirs=theirs: theirs(pattern, subject, flags))
            assert _spans(found) == _spans(expected)


def _spans(found):
    if found is None or isinstance(found, type):
        return found
    return [found.span(group) for group in range(len(found.groups()) + 1)]
