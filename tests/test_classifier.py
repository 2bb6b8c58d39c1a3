from importlib import resources

import pytest
import tldextract
import yaml
from hypothesis import given
from hypothesis import strategies as st

from millimetric.ingest.classify import classify


def load(name):
    return yaml.safe_load((resources.files("millimetric") / "data" / name).read_text("utf-8"))


REFERRERS = load("referrers.yaml")
SIGNALS = load("attribution.yaml")
GROUP_MEDIUMS = {
    "facebook": ("social", "facebook_referrer"),
    "social": ("social", "social_referrer"),
    "search": ("organic", "search_referrer"),
    "ai": ("ai", "ai_referrer"),
    "email": ("email", "email_referrer"),
}
PAGE = "https://shop.example.com/pricing"


def entries(group):
    return [(domain, source) for source, domains in REFERRERS[group].items() for domain in domains]


# (url, referrer, request_host) -> (source, medium, campaign, confidence, rule_id)
CASES = [
    # 1. ad-network click ids
    (f"{PAGE}?gclid=abc", None, None, ("google", "paid", None, "high", "click_id_gclid")),
    (f"{PAGE}?gbraid=abc", None, None, ("google", "paid", None, "high", "click_id_gbraid")),
    (f"{PAGE}?wbraid=abc", None, None, ("google", "paid", None, "high", "click_id_wbraid")),
    (f"{PAGE}?msclkid=abc", None, None, ("bing", "paid", None, "high", "click_id_msclkid")),
    (f"{PAGE}?ttclid=abc", None, None, ("tiktok", "paid", None, "high", "click_id_ttclid")),
    (f"{PAGE}?li_fat_id=abc", None, None, ("linkedin", "paid", None, "high", "click_id_li_fat_id")),
    (f"{PAGE}?twclid=abc", None, None, ("twitter", "paid", None, "high", "click_id_twclid")),
    (f"{PAGE}?GCLID=abc&utm_campaign=q3", None, None, ("google", "paid", "q3", "high", "click_id_gclid")),
    (f"{PAGE}?utm_source=newsletter&gclid=abc", None, None, ("google", "paid", None, "high", "click_id_gclid")),
    (f"{PAGE}?fbclid=x&gclid=abc", "https://l.facebook.com/", None, ("google", "paid", None, "high", "click_id_gclid")),
    # 2. fbclid through Facebook's link shim
    (f"{PAGE}?fbclid=abc", "https://l.facebook.com/", None, ("facebook", "paid", None, "high", "fb_ad_redirect")),
    (
        f"{PAGE}?fbclid=abc",
        "https://lm.facebook.com/l.php?u=x",
        None,
        ("facebook", "paid", None, "high", "fb_ad_redirect"),
    ),
    (
        f"{PAGE}?fbclid=abc&utm_campaign=spring_launch",
        "https://l.facebook.com/",
        None,
        ("facebook", "paid", "spring_launch", "high", "fb_ad_redirect"),
    ),
    (
        f"{PAGE}?fbclid=abc&utm_source=newsletter",
        "https://l.facebook.com/",
        None,
        ("facebook", "paid", None, "high", "fb_ad_redirect"),
    ),
    # 3. fbclid with a Meta utm_source
    (f"{PAGE}?fbclid=abc&utm_source=facebook", None, None, ("facebook", "paid", None, "high", "fbclid_utm_source")),
    (f"{PAGE}?fbclid=abc&utm_source=ig", None, None, ("instagram", "paid", None, "high", "fbclid_utm_source")),
    (f"{PAGE}?fbclid=abc&utm_source=Meta", None, None, ("facebook", "paid", None, "high", "fbclid_utm_source")),
    (
        f"{PAGE}?fbclid=abc&utm_source=instagram&utm_medium=social",
        "https://www.instagram.com/",
        None,
        ("instagram", "paid", None, "high", "fbclid_utm_source"),
    ),
    # 4. paid utm_medium
    (f"{PAGE}?utm_source=facebook&utm_medium=cpc", None, None, ("facebook", "paid", None, "high", "utm_paid_medium")),
    (f"{PAGE}?utm_medium=cpc", None, None, ("unknown", "paid", None, "medium", "utm_paid_medium")),
    (
        f"{PAGE}?utm_source=Google&utm_medium=PPC&utm_campaign=Brand",
        None,
        None,
        ("google", "paid", "Brand", "high", "utm_paid_medium"),
    ),
    (
        f"{PAGE}?utm_source=ig&utm_medium=paid_social",
        None,
        None,
        ("instagram", "paid", None, "high", "utm_paid_medium"),
    ),
    (
        f"{PAGE}?utm_source=reddit&utm_medium=display",
        "https://www.reddit.com/",
        None,
        ("reddit", "paid", None, "high", "utm_paid_medium"),
    ),
    (
        f"{PAGE}?utm_medium=banner",
        "https://www.google.com/",
        None,
        ("unknown", "paid", None, "medium", "utm_paid_medium"),
    ),
    # 5. fbclid alone
    (f"{PAGE}?fbclid=abc", None, None, ("facebook", "paid", None, "medium", "fbclid_only")),
    (f"{PAGE}?fbclid=abc", "https://www.facebook.com/", None, ("facebook", "paid", None, "medium", "fbclid_only")),
    (f"{PAGE}?fbclid=abc&utm_medium=social", None, None, ("facebook", "paid", None, "medium", "fbclid_only")),
    (f"{PAGE}?fbclid=abc", "https://www.google.com/", None, ("facebook", "paid", None, "medium", "fbclid_only")),
    # 6. explicit utm_source
    (
        f"{PAGE}?utm_source=newsletter&utm_medium=email&utm_campaign=may",
        None,
        None,
        ("newsletter", "email", "may", "high", "utm_source"),
    ),
    (f"{PAGE}?utm_source=Twitter", None, None, ("twitter", "unknown", None, "high", "utm_source")),
    (
        f"{PAGE}?utm_source=%20HackerNews%20&utm_medium=Social",
        "https://www.google.com/",
        None,
        ("hackernews", "social", None, "high", "utm_source"),
    ),
    (f"{PAGE}?fbclid=abc&utm_source=newsletter", None, None, ("newsletter", "unknown", None, "high", "utm_source")),
    (f"{PAGE}?utm_source=fb&utm_medium=social", None, None, ("facebook", "social", None, "high", "utm_source")),
    (f"{PAGE}?utm_source=partner&utm_source=other", PAGE, None, ("partner", "unknown", None, "high", "utm_source")),
    # 7. Facebook-family referrer, no fbclid
    (PAGE, "https://www.facebook.com/", None, ("facebook", "social", None, "medium", "facebook_referrer")),
    (PAGE, "https://m.facebook.com/story.php", None, ("facebook", "social", None, "medium", "facebook_referrer")),
    (PAGE, "https://l.facebook.com/", None, ("facebook", "social", None, "medium", "facebook_referrer")),
    (PAGE, "https://l.instagram.com/", None, ("instagram", "social", None, "medium", "facebook_referrer")),
    (
        f"{PAGE}?utm_campaign=summer",
        "android-app://com.facebook.katana/",
        None,
        ("facebook", "social", "summer", "medium", "facebook_referrer"),
    ),
    # 8. other social networks
    (PAGE, "https://t.co/abc123", None, ("twitter", "social", None, "medium", "social_referrer")),
    (PAGE, "https://x.com/someone/status/1", None, ("twitter", "social", None, "medium", "social_referrer")),
    (PAGE, "https://www.linkedin.com/feed/", None, ("linkedin", "social", None, "medium", "social_referrer")),
    (PAGE, "https://lnkd.in/abc", None, ("linkedin", "social", None, "medium", "social_referrer")),
    (PAGE, "https://old.reddit.com/r/python/", None, ("reddit", "social", None, "medium", "social_referrer")),
    (PAGE, "https://m.youtube.com/", None, ("youtube", "social", None, "medium", "social_referrer")),
    (PAGE, "https://mastodon.social/@someone", None, ("mastodon", "social", None, "medium", "social_referrer")),
    (PAGE, "https://bsky.app/profile/x", None, ("bluesky", "social", None, "medium", "social_referrer")),
    (PAGE, "https://news.ycombinator.com/item?id=1", None, ("hackernews", "social", None, "medium", "social_referrer")),
    (PAGE, "https://www.threads.net/", None, ("threads", "social", None, "medium", "social_referrer")),
    # 9. search engines
    (PAGE, "https://www.google.com/", None, ("google", "organic", None, "medium", "search_referrer")),
    (PAGE, "https://www.google.co.uk/", None, ("google", "organic", None, "medium", "search_referrer")),
    (PAGE, "https://www.google.de/search?q=x", None, ("google", "organic", None, "medium", "search_referrer")),
    (PAGE, "https://www.google.com.br/", None, ("google", "organic", None, "medium", "search_referrer")),
    (PAGE, "https://www.bing.com/", None, ("bing", "organic", None, "medium", "search_referrer")),
    (PAGE, "https://duckduckgo.com/", None, ("duckduckgo", "organic", None, "medium", "search_referrer")),
    (PAGE, "https://search.yahoo.com/", None, ("yahoo", "organic", None, "medium", "search_referrer")),
    (PAGE, "https://yandex.ru/search/", None, ("yandex", "organic", None, "medium", "search_referrer")),
    (PAGE, "https://search.brave.com/", None, ("brave", "organic", None, "medium", "search_referrer")),
    (
        PAGE,
        "android-app://com.google.android.googlequicksearchbox/",
        None,
        ("google", "organic", None, "medium", "search_referrer"),
    ),
    (PAGE, "HTTPS://WWW.GOOGLE.FR:443/", None, ("google", "organic", None, "medium", "search_referrer")),
    # 10. AI assistants
    (PAGE, "https://chatgpt.com/", None, ("chatgpt", "ai", None, "medium", "ai_referrer")),
    (PAGE, "https://chat.openai.com/", None, ("chatgpt", "ai", None, "medium", "ai_referrer")),
    (PAGE, "https://claude.ai/", None, ("claude", "ai", None, "medium", "ai_referrer")),
    (PAGE, "https://www.perplexity.ai/", None, ("perplexity", "ai", None, "medium", "ai_referrer")),
    (PAGE, "https://gemini.google.com/app", None, ("gemini", "ai", None, "medium", "ai_referrer")),
    (PAGE, "https://copilot.microsoft.com/", None, ("copilot", "ai", None, "medium", "ai_referrer")),
    # 11. email
    (PAGE, "https://mail.google.com/", None, ("gmail", "email", None, "medium", "email_referrer")),
    (PAGE, "https://outlook.live.com/", None, ("outlook", "email", None, "medium", "email_referrer")),
    (PAGE, "https://mail.yahoo.com/", None, ("yahoo", "email", None, "medium", "email_referrer")),
    (
        f"{PAGE}?utm_medium=email",
        "https://mail.google.com/",
        None,
        ("gmail", "email", None, "medium", "email_referrer"),
    ),
    (f"{PAGE}?utm_medium=email&utm_campaign=digest", None, None, ("unknown", "email", "digest", "medium", "utm_email")),
    (
        f"{PAGE}?utm_medium=E-Mail",
        "https://someblog.example.org/",
        None,
        ("unknown", "email", None, "medium", "utm_email"),
    ),
    # 12. internal
    (PAGE, "https://shop.example.com/", None, ("internal", "internal", None, "high", "internal")),
    (PAGE, "https://www.shop.example.com/cart", None, ("internal", "internal", None, "high", "internal")),
    ("https://example.com:8443/a", "https://example.com/b", None, ("internal", "internal", None, "high", "internal")),
    (None, "https://shop.example.com/", "shop.example.com:443", ("internal", "internal", None, "high", "internal")),
    (
        f"{PAGE}?utm_campaign=x",
        "https://SHOP.example.com./",
        "api.example.net",
        ("internal", "internal", "x", "high", "internal"),
    ),
    # 13. direct
    (PAGE, None, None, ("direct", "direct", None, "high", "direct")),
    (None, None, None, ("direct", "direct", None, "high", "direct")),
    ("", "", "", ("direct", "direct", None, "high", "direct")),
    (f"{PAGE}?utm_campaign=launch&gclid=", "", None, ("direct", "direct", "launch", "high", "direct")),
    (PAGE, "not a url", None, ("direct", "direct", None, "high", "direct")),
    # 14. referral
    (PAGE, "https://someblog.example.org/post/1", None, ("example.org", "referral", None, "low", "referral")),
    (PAGE, "https://news.bbc.co.uk/", None, ("bbc.co.uk", "referral", None, "low", "referral")),
    (PAGE, "https://alice.github.io/notes", None, ("alice.github.io", "referral", None, "low", "referral")),
    (PAGE, "http://192.0.2.10:8080/", None, ("192.0.2.10", "referral", None, "low", "referral")),
    (PAGE, "http://localhost:3000/", None, ("localhost", "referral", None, "low", "referral")),
    (PAGE, "https://brave.com/", None, ("brave.com", "referral", None, "low", "referral")),
    (f"{PAGE}?utm_medium=social", None, None, ("unknown", "social", None, "low", "referral")),
    (
        f"{PAGE}?utm_medium=partner",
        "https://docs.example.net/",
        None,
        ("example.net", "partner", None, "low", "referral"),
    ),
]


@pytest.mark.parametrize(("url", "referrer", "request_host", "expected"), CASES)
def test_rules(url, referrer, request_host, expected):
    assert classify(url, referrer, request_host) == expected


def test_every_rule_is_covered_three_times():
    rule_ids = [expected[4] for *_, expected in CASES]
    for prefix in (
        "click_id_",
        "fb_ad_redirect",
        "fbclid_utm_source",
        "utm_paid_medium",
        "fbclid_only",
        "utm_source",
        "facebook_referrer",
        "social_referrer",
        "search_referrer",
        "ai_referrer",
        "email_referrer",
        "internal",
        "direct",
        "referral",
    ):
        assert sum(rule_id.startswith(prefix) for rule_id in rule_ids) >= 3, prefix
    assert len(CASES) > 60


@pytest.mark.parametrize(
    ("url", "referrer", "request_host"),
    [
        ("http://[::1", "http://[::1", "[::1"),
        ("http://[::1]/?gclid=", "https://[fe80::1%eth0]/", "::1"),
        ("https://x.com/?" + "a=b&" * 50_000, "https://" + "a." * 50_000 + "com/", "h" * 100_000),
        ("\x00\x01http://\u2100/?utm_source=\udcff", "http://\uff03@evil.com", "\n"),
        ("https://example.com/?utm_source=%ZZ&%%%", "https://xn--.com/", None),
        ("mailto:someone@example.com", "javascript:alert(1)", "example.com"),
    ],
)
def test_garbage_never_raises(url, referrer, request_host):
    assert classify(url, referrer, request_host).confidence in {"high", "medium", "low"}


urlish = st.one_of(
    st.none(),
    st.text(),
    st.builds(
        str.__add__,
        st.sampled_from(["http://", "https://[", "//", "android-app://", "https://a.com/?"]),
        st.text(),
    ),
)


@given(urlish, urlish, urlish)
def test_classify_never_raises(url, referrer, request_host):
    result = classify(url, referrer, request_host)
    assert result.confidence in {"high", "medium", "low"}
    assert result.source and result.medium and result.rule_id


@pytest.mark.parametrize(
    ("group", "domain", "source"),
    [(group, domain, source) for group in GROUP_MEDIUMS for domain, source in entries(group)],
)
def test_listed_referrer(group, domain, source):
    medium, rule_id = GROUP_MEDIUMS[group]
    expected = (source, medium, None, "medium", rule_id)
    assert classify(PAGE, f"https://{domain}/", None) == expected
    assert classify(PAGE, f"https://sub.{domain}/path", None) == expected


def test_list_sizes():
    assert len(entries("search")) >= 30
    assert len(entries("social")) >= 25
    assert len(entries("ai")) >= 10
    assert len(entries("email")) >= 10
    assert {"facebook", "instagram"} <= set(REFERRERS["facebook"])


def test_each_domain_is_listed_once_and_is_not_a_public_suffix():
    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    domains = [domain for group in REFERRERS for domain, _ in entries(group)]
    assert len(domains) == len(set(domains))
    for domain in domains:
        assert domain == domain.lower().strip()
        assert "." in domain and extract(domain).suffix != domain, domain


@pytest.mark.parametrize(("param", "source"), list(SIGNALS["click_ids"].items()))
def test_click_ids(param, source):
    assert classify(f"{PAGE}?{param}=1", None) == (source, "paid", None, "high", f"click_id_{param}")


@pytest.mark.parametrize("medium", SIGNALS["paid_mediums"])
def test_paid_mediums(medium):
    assert classify(f"{PAGE}?utm_source=acme&utm_medium={medium}", None) == (
        "acme",
        "paid",
        None,
        "high",
        "utm_paid_medium",
    )


@pytest.mark.parametrize("medium", SIGNALS["email_mediums"])
def test_email_mediums(medium):
    assert classify(f"{PAGE}?utm_medium={medium}", None)[1:] == (
        "email",
        None,
        "medium",
        "utm_email",
    )


@pytest.mark.parametrize(
    ("alias", "source"),
    [(alias, source) for source, aliases in SIGNALS["utm_source_aliases"].items() for alias in aliases],
)
def test_utm_source_aliases(alias, source):
    assert classify(f"{PAGE}?fbclid=1&utm_source={alias.upper()}", None) == (
        source,
        "paid",
        None,
        "high",
        "fbclid_utm_source",
    )
    assert classify(f"{PAGE}?utm_source={alias}", None).source == source


@pytest.mark.parametrize("host", SIGNALS["fb_ad_redirect_hosts"])
def test_fb_ad_redirect_hosts(host):
    assert classify(f"{PAGE}?fbclid=1", f"https://{host}/").rule_id == "fb_ad_redirect"
