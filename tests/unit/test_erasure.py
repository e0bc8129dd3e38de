"""The pieces of erasure on request that are pure: one pseudonym scheme, whole-token replacement."""

from __future__ import annotations

import json

from shared.erasure import Replacer, _strings_in
from shared.pseudonyms import is_pseudonym, pseudonym

KEY = b"k" * 32


def test_a_pseudonym_is_stable_keyed_and_never_pseudonymized_again():
    p = pseudonym(KEY, "C-77")
    assert is_pseudonym(p) and p == pseudonym(KEY, "C-77") != pseudonym(b"x" * 32, "C-77")
    assert pseudonym(KEY, p) == p  # an erased id an auditor reads is the pseudonym they saw before


def test_the_auditor_and_erasure_share_the_scheme(tmp_path):
    from shared.auth import Pseudonyms as AnswerPseudonyms
    from shared.pseudonyms import Pseudonyms

    assert AnswerPseudonyms(tmp_path)("C-1") == Pseudonyms(tmp_path)("C-1")


def test_values_are_replaced_as_whole_tokens_in_any_case_and_json_escaped():
    replace = Replacer({"C-7": "anon-aaaaaaaaaaaaaaaa", 'R"1': "anon-bbbbbbbbbbbbbbbb"})
    assert replace("C-7 and C-77 and XC-7 and c-7.") == ("anon-aaaaaaaaaaaaaaaa and C-77 and XC-7 and "
                                                       "anon-aaaaaaaaaaaaaaaa.")
    escaped = json.dumps({"receipt_id": 'R"1'})
    assert json.loads(replace(escaped)) == {"receipt_id": "anon-bbbbbbbbbbbbbbbb"}
    assert Replacer({})("C-7") == "C-7"


def test_a_dead_letters_original_is_searched_to_the_nested_event():
    original = json.dumps({"event": json.dumps({"type": "unit.sold", "data": {"customer_id": "C-9"}})})
    assert "C-9" in _strings_in(original)
    assert _strings_in("not json") == ["not json"]


def test_a_token_registry_is_made_with_its_pseudonym_key(tmp_path):
    """A registry made for a mounted secret (compose) carries the key: services never write it there."""
    from shared.tokens import create_token

    create_token(tmp_path / "tokens", "admin")
    key = tmp_path / "tokens" / "pseudonym.key"
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32
