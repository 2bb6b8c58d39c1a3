from millimetric.auth.keys import hash_secret, mint_key, parse_key, secret_matches


def test_minted_key_round_trips_through_the_parser():
    minted = mint_key("pk", "live", "pepper")
    parsed = parse_key(minted.token)
    assert parsed is not None
    assert (parsed.kind, parsed.env, parsed.prefix) == ("pk", "live", minted.prefix)
    assert len(parsed.secret) >= 32 and len(minted.prefix) == 8
    assert secret_matches(parsed.secret, "pepper", minted.secret_hash)
    assert not secret_matches(parsed.secret, "other-pepper", minted.secret_hash)


def test_only_the_hash_is_kept():
    minted = mint_key("sk", "test", "p")
    secret = parse_key(minted.token).secret
    assert secret not in minted.secret_hash
    assert minted.secret_hash == hash_secret(secret, "p")


def test_secrets_with_underscores_parse():
    token = "rk_live_0123abcd_" + "a_b-" * 10
    assert parse_key(token).secret == "a_b-" * 10


def test_malformed_tokens_are_refused():
    for token in [
        "",
        "pk_live_0123abcd",
        "xk_live_0123abcd_" + "a" * 32,
        "pk_prod_0123abcd_" + "a" * 32,
        "pk_live_0123ABCD_" + "a" * 32,
        "pk_live_0123abcd_" + "a" * 31,
        "pk_live_0123abcd_" + "a!" * 20,
    ]:
        assert parse_key(token) is None, token
