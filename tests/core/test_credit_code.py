"""The unified social credit code's check character (GB 32100-2015)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.directory.credit_code import ALPHABET, check_character, is_valid, make_code, problem_with

# Codes published by the enterprises themselves.
REAL = ["91350100M000100Y43", "91110000600037341L", "9144030071526726XG"]


def test_real_codes_validate() -> None:
    for code in REAL:
        assert is_valid(code), problem_with(code)


def test_reasons_are_specific() -> None:
    assert "18 characters" in (problem_with("9135") or "")
    assert "alphabet" in (problem_with("91350100M000100Y4I") or "")
    assert "division" in (problem_with("91AB0100M000100Y43") or "")
    assert problem_with("91350100M000100Y40") == "check character is '0', expected '3'"


body = st.tuples(
    st.sampled_from("159"),
    st.sampled_from("123"),
    st.from_regex(r"\A[0-9]{6}\Z"),
    st.text(alphabet=ALPHABET, min_size=9, max_size=9),
)


@given(body)
def test_built_codes_validate(parts: tuple[str, str, str, str]) -> None:
    assert is_valid(make_code(*parts))


@given(body, st.integers(0, 17), st.sampled_from(ALPHABET))
def test_every_single_substitution_is_caught(parts: tuple[str, str, str, str], index: int, char: str) -> None:
    code = make_code(*parts)
    mutated = code[:index] + char + code[index + 1 :]
    if mutated != code and mutated[2:8].isdigit():
        assert not is_valid(mutated)
    assert check_character(code[:17]) == code[17]
