"""API key names: ``name=key`` entries keep their name, bare keys get a fingerprint, and only
the name of the matching key comes out of a check (never a key)."""

from __future__ import annotations

import hashlib

from pydantic import SecretStr

from batchpipe.services.ingest.auth import ApiKeys, AuthResult, fingerprint, split_key
from batchpipe.shared.contracts import is_valid_key_name


def test_split_key_names_and_bare_keys() -> None:
    assert split_key("team-a=sk-123") == ("team-a", "sk-123")
    bare = "sk-abc"
    assert split_key(bare) == (fingerprint(bare), bare)
    assert fingerprint(bare) == "key-" + hashlib.sha256(b"sk-abc").hexdigest()[:8]
    assert is_valid_key_name(fingerprint(bare))
    for padded in ("c2VjcmV0==", "c2VjcmV0=", "bad name=xyz"):  # base64 padding, not a name
        assert split_key(padded) == (fingerprint(padded), padded)


def test_identify_gives_the_name_of_the_matching_key_only() -> None:
    keys = ApiKeys((SecretStr("team-a=sk-one"), SecretStr("sk-two")))
    assert keys.identify("Bearer sk-one") == (AuthResult.OK, "team-a")
    assert keys.identify("Bearer sk-two") == (AuthResult.OK, fingerprint("sk-two"))
    assert keys.identify("Bearer team-a=sk-one") == (AuthResult.INVALID, None)
    assert keys.identify(None) == (AuthResult.MISSING, None)
    assert ApiKeys(()).identify("Bearer anything") == (AuthResult.OK, None)
    assert keys.names == ("team-a", fingerprint("sk-two"))
    assert "sk-one" not in repr(vars(keys)) and "sk-two" not in repr(vars(keys))
