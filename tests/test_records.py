from bpfs.remote.records import Analysis, Genome, Sample, fk_id, parse_time, split_s3_uri


def test_fk_id_reads_both_dialects():
    assert fk_id(7) == 7
    assert fk_id("/api/v1/workflows/7") == 7
    assert fk_id("https://h/api/v1/samples/42") == 42
    assert fk_id({"id": 5, "name": "x"}) == 5
    assert fk_id(None) is None and fk_id("") is None and fk_id("/api/v1/x/") is None


def test_parse_time_naive_is_utc_and_zone_is_honoured():
    assert parse_time("2024-03-05T14:07:31.123456") == parse_time("2024-03-05T14:07:31.123456Z")
    assert parse_time("2024-03-05T15:07:31.123456+01:00") == parse_time("2024-03-05T14:07:31.123456Z")
    assert parse_time("nonsense") is None and parse_time(None) is None


def test_split_s3_uri():
    assert split_s3_uri("analyses/7/1/x.bam", "b") == ("b", "analyses/7/1/x.bam")
    assert split_s3_uri("s3://other/k/x", "b") == ("other", "k/x")


def test_v1_and_v3_analyses_normalise_alike():
    v1 = {"id": 501, "resource_uri": "/api/v1/analyses/501", "status": "completed",
          "workflow": "/api/v1/workflows/7", "samples": ["/api/v1/samples/42"], "owner": "/api/v1/users/7",
          "date_created": "2024-03-05T15:00:00.000000", "completed_on": "2024-03-05T17:44:03.000000",
          "params": {"info": {"bucket": "own"}},
          "files": [{"id": 70001, "path": "analyses/7/501/star/a.bam", "tags": ["bam"], "filesize": 10},
                    {"id": 70002, "path": "s3://else/k/b.txt", "tags": None, "filesize": None}]}
    v3 = {**v1, "workflow": 7, "samples": [{"id": 42, "name": "liver"}], "owner": 7,
          "date_created": "2024-03-05T15:00:00.000000Z", "completed_on": "2024-03-05T17:44:03.000000Z"}
    a, b = Analysis.parse(v1, "cfg"), Analysis.parse(v3, "cfg")
    for x in (a, b):
        assert (x.id, x.workflow, x.samples, x.owner, x.bucket, x.finished) == (501, 7, (42,), 7, "own", True)
        assert x.files[0].bucket == "own" and x.files[0].tags == {"bam"}
        assert (x.files[1].bucket, x.files[1].key, x.files[1].tags, x.files[1].filesize) == ("else", "k/b.txt",
                                                                                              frozenset(), None)
    assert a.mtime == b.mtime
    running = Analysis.parse({"id": 1, "status": "running"}, None)
    assert not running.finished and running.files is None


def test_samples_and_genomes():
    s = Sample.parse({"id": 42, "name": "liver", "genome": 12, "genome_name": "hg38",
                      "uploads": [{"id": 1, "key": "uploads/7/42/r1.fq.gz", "filesize": None},
                                  {"id": 2, "key": "ftp://host/r2.fq.gz"}]}, "b")
    assert s.genome == "hg38" and [u.key for u in s.uploads] == ["uploads/7/42/r1.fq.gz"]
    assert s.uploads[0].filesize is None
    assert Sample.parse({"id": 1, "genome": "hg19"}, None).genome == "hg19"
    assert Sample.parse({"id": 1}, None).uploads is None
    g = Genome.parse({"resource_uri": "/api/v1/genomes/3", "name": "mm9", "date_created": "2018-04-18T15:10:33.438603"})
    assert (g.id, g.name, g.created_text) == (3, "mm9", "2018-04-18T15:10:33.438603")
