import json
import os

import pytest

from bpfs.errors import ConfigError
from bpfs.remote.config import find_config, load_config, parse_config

V1 = {
    "api": {"host": "https://app.basepairtech.com/", "prefix": "api/v1/", "username": "a@x.org", "api_key": "k1"},
    "aws": {"aws_id": "AKIA1", "aws_secret": "s1", "s3": {"bucket": "b1", "region": "us-west-2"}},
}
V3 = {
    "api_v3": {"host": "app.basepairtech.com", "prefix": "/api/v3/", "ssl": True, "username": "a@x.org",
               "key": "k3", "timeout": "15"},
    "storage": {"user": {"settings": {"bucket": "b3", "region": "eu-west-1", "endpoint_url": "http://127.0.0.1:9"},
                         "credentials": {"id": "AKIA3", "secret": "s3"}}},
}


def test_v1_concatenates_host_and_prefix_and_reads_aws():
    c = parse_config(V1, environ={})
    assert (c.dialect, c.base_url) == ("v1", "https://app.basepairtech.com/api/v1/")
    assert (c.username, c.api_key) == ("a@x.org", "k1")
    assert (c.bucket, c.region, c.aws_id, c.aws_secret, c.endpoint_url) == ("b1", "us-west-2", "AKIA1", "s1", None)


def test_v3_builds_url_from_ssl_and_reads_storage():
    c = parse_config(V3, environ={})
    assert (c.dialect, c.base_url, c.api_key, c.timeout) == ("v3", "https://app.basepairtech.com/api/v3/", "k3", 15.0)
    assert (c.bucket, c.region, c.endpoint_url, c.aws_id, c.aws_secret) == (
        "b3", "eu-west-1", "http://127.0.0.1:9", "AKIA3", "s3")
    plain = parse_config({**V3, "api_v3": {**V3["api_v3"], "ssl": False, "timeout": "x"}}, environ={})
    assert plain.base_url.startswith("http://") and plain.timeout == 10.0


def test_v3_cli_defers_storage_to_the_server():
    c = parse_config({"api_v3": {**V3["api_v3"], "cli": True}, "storage": V3["storage"]}, environ={})
    assert c.fetch_storage and c.bucket is None
    c = c.with_storage({"storage": {"user": {"settings": {"bucket": "srv"}, "credentials": {"role": "r"}}}})
    assert c.bucket == "srv" and c.aws_id is None


def test_environment_endpoint_wins_over_the_file():
    c = parse_config(V3, environ={"AWS_ENDPOINT_URL": "http://a", "AWS_ENDPOINT_URL_S3": "http://b"})
    assert c.endpoint_url == "http://b"
    assert parse_config(V1, environ={"AWS_ENDPOINT_URL": "http://a"}).endpoint_url == "http://a"
    v1 = {**V1, "aws": {**V1["aws"], "endpoint_url": "http://file"}}
    assert parse_config(v1, environ={}).endpoint_url == "http://file"


@pytest.mark.parametrize("data, message", [
    ({}, "neither"),
    ([], "JSON object"),
    ({"api": {"host": "https://h/", "prefix": "api/v1/", "username": "u"}}, "missing api_key"),
    ({"api": {"host": "h/", "prefix": "api/v1/", "username": "u", "api_key": "k"}}, "needs a scheme"),
    ({"api": {"host": "https://h/", "prefix": "/api/v2/", "username": "u", "api_key": "k"}}, "not a v1 prefix"),
    ({"api_v3": {"host": "h", "prefix": "/api/v2/", "username": "u", "key": "k"}}, "exactly '/api/v3/'"),
    ({"api_v3": {"host": "https://h", "prefix": "/api/v3/", "username": "u", "key": "k"}}, "must not have a scheme"),
    ({"api_v3": {"host": "h", "prefix": "/api/v3/", "username": "u", "api_key": "k"}}, "missing key"),
    ({"api_v3": "x"}, "must be an object"),
])
def test_invalid_configs_say_what_is_wrong(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data, environ={})


def test_lookup_order_and_permission_warning(tmp_path, monkeypatch):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for p in (a, b):
        p.write_text(json.dumps(V1))
    assert find_config(str(a), environ={"BP_CONFIG_FILE": str(b)}) == a
    assert find_config(None, environ={"BP_CONFIG_FILE": str(b)}) == b
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="no config file"):
        find_config(None, environ={})
    (tmp_path / ".basepair").mkdir()
    (tmp_path / ".basepair" / "config.json").write_text(json.dumps(V3))
    assert find_config(None, environ={}).name == "config.json"
    with pytest.raises(ConfigError, match="does not exist"):
        find_config(str(tmp_path / "missing.json"), environ={})
    os.chmod(a, 0o644)
    assert any("readable by others" in w for w in load_config(a, environ={}).warnings)
    os.chmod(a, 0o600)
    assert load_config(a, environ={}).warnings == ()
    a.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(a, environ={})


def test_secrets_stay_out_of_repr():
    c = parse_config(V1, environ={})
    assert "k1" not in repr(c) and "s1" not in repr(c)
