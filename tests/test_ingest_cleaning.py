"""Reddit ingestion and cleaning: messy dump files in, clean threads + exact counts out."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import datasets
import praw
import pytest
import zstandard as zstd

from training.cleaning import ThreadBuilder, cleaning_config_from_settings, coerce_int, full_permalink
from training.text_cleaning import clean_text
from training.ingest import IngestError, ingest_to_threads, load_report
from training.reddit_api import (
    MissingCredentialsError,
    RedditCredentials,
    comment_to_record,
    create_reddit,
    submission_to_record,
)
from training.reddit_dump import DumpStats, expand_inputs, read_dump_file

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000


def post(id, sub="JapanTravel", title=None, **fields):
    record = {
        "id": id, "name": f"t3_{id}", "subreddit": sub, "author": "traveller_one",
        "title": title if title is not None else f"Question number {id} about getting around Japan by train",
        "selftext": f"Some details for {id}: two weeks, mid budget, first trip.", "score": 50,
        "num_comments": 3, "created_utc": T0, "over_18": False, "is_self": True,
        "permalink": f"/r/{sub}/comments/{id}/question_{id}/",
    }
    record.update(fields)
    return record


def comment(id, link, parent=None, body=None, score=10, **fields):
    record = {
        "id": id, "link_id": f"t3_{link}", "parent_id": parent or f"t3_{link}", "subreddit": "JapanTravel",
        "author": "helpful_local", "body": body or f"Useful answer {id}: take the Keisei Skyliner, it is quick.",
        "score": score, "created_utc": T0 + 60,
    }
    record.update(fields)
    return record


def write_jsonl(path: Path, records, extra_lines=()) -> Path:
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_zst(path: Path, records) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    params = zstd.ZstdCompressionParameters.from_level(19, window_log=31)
    path.write_bytes(zstd.ZstdCompressor(compression_params=params).compress(data))
    return path


@pytest.fixture
def tmp_settings(settings, tmp_path):
    return settings.with_overrides({"paths": {"home": str(tmp_path / "home")}})


# The messy dump: each record exercises one case; expected outcomes are asserted below.
SUBMISSIONS = [
    post("a1", sub="japantravel", score="45", created_utc="1700000000.0", num_comments="7", permalink=None,
         title="Narita &amp;amp; Haneda: which airport is better for Shinjuku?",
         selftext="Landing at 6:30 on 2024-04-12. Is &amp;quot;Skyliner&amp;quot; worth ¥2,580?&amp;nbsp;Thanks!"),
    post("a2", sub="travel", score=12),
    post("a2", sub="travel", score=30),  # same id again, higher score wins
    post("a3", sub="solotravel", title="Solo in Lisbon for a week, trams or walking everywhere?", score=80,
         selftext="Staying in Alfama, no car."),
    post("a4", sub="solotravel", title="Solo in Lisbon for a week: trams or walking everywhere", score=20,
         selftext="Staying in **Alfama**, no car!"),  # a repost of a3 under another id
    post("b1", selftext="[deleted]", author="[deleted]"),
    post("b2", selftext="[removed]"),
    post("b3", removed_by_category="moderator"),
    post("b4", over_18=True),
    post("b5", author="AutoModerator"),
    post("b6", score=0),
    post("b7", sub="wallstreetbets"),
    post("b8", title=None) | {"title": None},
    {"name": "", "title": "No id at all", "subreddit": "travel", "selftext": "x"},
    post("b9", sub=None) | {"subreddit": None},
    post("c1", score="not a number"),  # unreadable score: stored as 0, not judged; but no comments
]

COMMENTS = [
    # a1: a nested chain through a deleted parent, plus the cap
    comment("k1", "a1", score="40"),
    comment("k2", "a1", parent="t1_k1", score=30, body="[deleted]", author="[deleted]"),
    comment("k3", "a1", parent="t1_k2", score=25, body="Replying to the deleted one: the Limousine Bus drops you at the hotel door."),
    comment("k4", "a1", score=5, body="Ping u/some_guy or /u/Other-Guy, mail me at jane.doe@example.com or call +81 90-1234-5678 "
            "or (555) 123-4567. Flight NH 106 lands 14:35 on 2024-04-12; Skyliner is ¥2,580 and 100 000 000 VND in 2019 2020."),
    comment("k5", "a1", score=3), comment("k6", "a1", score=2), comment("k7", "a1", score=1),
    comment("k8", "a1", score=1, created_utc=T0 + 999),  # ties k7 but later: the one beyond the cap
    comment("m1", "a1", author="AutoModerator", body="Please read the rules before posting in this subreddit."),
    comment("m2", "a1", author="RemindMeBot", body="I will be messaging you in 2 days to remind you of this."),
    comment("m3", "a1", author="someone", body="Converted: 2580 JPY is 17 USD. I am a bot, beep boop."),
    comment("m4", "a1", score=-4, body="This is a downvoted and unhelpful comment, honestly."),
    comment("m5", "a1", body="[removed]"),
    comment("m6", "a1", body="thanks!"),
    comment("k1", "a1", score=2),  # same id again with a lower score: dropped as duplicate
    comment("m7", "a1", parent="t1_gone", body="Reply to a comment that is not in the dump at all."),
    comment("m8", "zz", body="A reply under a post that is not in the dump."),
    comment("m9", "b1", body="A reply under the deleted post, long enough to count."),
    comment("m10", "a1", subreddit="wallstreetbets", body="Comment from elsewhere that names a foreign sub."),
    {"id": "m11", "link_id": "t3_a1", "subreddit": "JapanTravel"},  # no body
    # a2, a3: one comment each; a4's comment goes with the dropped repost
    comment("n1", "a2"), comment("n2", "a3", body="Walk, but take tram 28 once early in the morning."),
    comment("n3", "a4"),
]

BROKEN = ["{not json", "[1, 2, 3]", "", "   "]


def write_messy_dump(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "RS_2024-01.jsonl", SUBMISSIONS[:8], extra_lines=BROKEN[:2])
    write_jsonl(folder / "RS_2024-02.ndjson", SUBMISSIONS[8:], extra_lines=BROKEN[2:])
    write_zst(folder / "RC_2024-01.zst", COMMENTS)
    write_jsonl(folder / "probes.jsonl", [{"question": "not a Reddit record"}])  # ignored: RS_/RC_ exist
    return folder


def test_messy_dump_gives_exact_threads_and_counts(tmp_settings, tmp_path):
    dump = write_messy_dump(tmp_path / "dump")
    report = ingest_to_threads(tmp_settings, inputs=[dump], progress=False)
    out = tmp_settings.path("threads")
    threads = {row["thread_id"]: row for row in datasets.load_from_disk(str(out))}

    assert sorted(threads) == ["a1", "a2", "a3"]
    a1 = threads["a1"]
    assert a1["subreddit"] == "JapanTravel"  # canonical spelling from the config
    assert a1["title"] == "Narita & Haneda: which airport is better for Shinjuku?"
    assert a1["body"] == 'Landing at 6:30 on 2024-04-12. Is "Skyliner" worth ¥2,580? Thanks!'
    assert a1["score"] == 45 and a1["created_utc"] == T0
    assert a1["num_comments"] == 15  # the dump says "7", but 15 distinct a1 comments were seen
    assert threads["a2"]["num_comments"] == 3
    assert a1["permalink"] == "https://www.reddit.com/r/JapanTravel/comments/a1/narita_haneda_which_airport_is_better_for_shinjuku/"
    assert threads["a2"]["score"] == 30
    assert threads["a2"]["permalink"] == "https://www.reddit.com/r/travel/comments/a2/question_a2/"
    assert threads["a3"]["comments"][0]["body"] == "Walk, but take tram 28 once early in the morning."

    comments = a1["comments"]
    assert [c["comment_id"] for c in comments] == ["k1", "k3", "k4", "k5", "k6", "k7"]  # best first, capped at 6
    assert [c["score"] for c in comments] == [40, 25, 5, 3, 2, 1]
    depth = {c["comment_id"]: c["depth"] for c in comments}
    assert depth == {"k1": 0, "k3": 2, "k4": 0, "k5": 0, "k6": 0, "k7": 0}  # k3 -> deleted k2 -> k1
    pii = next(c["body"] for c in comments if c["comment_id"] == "k4")
    assert "some_guy" not in pii and "Other-Guy" not in pii and pii.count("a user") == 2
    assert "jane.doe" not in pii and "[email]" in pii
    assert "1234-5678" not in pii and "123-4567" not in pii and pii.count("[phone]") == 2
    for kept in ("NH 106", "14:35", "2024-04-12", "¥2,580", "100 000 000 VND", "2019 2020"):
        assert kept in pii

    saved = load_report(out)
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert saved["lines_read"] == len(SUBMISSIONS) + len(BROKEN) + len(COMMENTS)
    assert saved["broken_lines"] == 4
    assert saved["submissions"] == len(SUBMISSIONS) and saved["comments"] == len(COMMENTS)
    assert saved["dropped_submissions"] == {
        "bot": 1, "deleted": 1, "duplicate_content": 1, "duplicate_id": 1, "low_score": 1,
        "missing_fields": 3, "nsfw": 1, "other_subreddit": 1, "removed": 2, "too_few_comments": 1,
    }
    assert saved["dropped_comments"] == {
        "bot": 3, "deleted": 1, "duplicate_id": 1, "low_score": 1, "missing_fields": 1, "missing_parent": 1,
        "orphan": 1, "other_subreddit": 1, "over_cap": 1, "post_dropped": 2, "removed": 1, "too_short": 1,
    }
    assert saved["duplicates"] == {"submissions": 2, "comments": 1}
    assert saved["orphans"] == 2
    assert saved["threads_kept"] == 3 and saved["comments_kept"] == 8
    assert saved["threads_per_subreddit"] == {"JapanTravel": 1, "solotravel": 1, "travel": 1}
    # Every record lands in exactly one bucket.
    assert saved["submissions"] == saved["threads_kept"] + sum(saved["dropped_submissions"].values())
    assert saved["comments"] == saved["comments_kept"] + sum(saved["dropped_comments"].values())

    # A rerun writes byte-identical files.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    ingest_to_threads(tmp_settings, inputs=[dump], progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_zst_with_long_window_streams_and_counts_broken_lines(tmp_path):
    records = [comment(f"z{i}", "a1") for i in range(500)]
    path = write_zst(tmp_path / "RC_2024-03.zst", records)
    stats = DumpStats()
    assert [r["id"] for r in read_dump_file(path, stats)] == [f"z{i}" for i in range(500)]
    assert stats.total_lines == 500 and stats.total_broken == 0

    plain = write_jsonl(tmp_path / "odd.ndjson", records[:2], extra_lines=['"a string"', "{bad", ""])
    stats = DumpStats()
    assert len(list(read_dump_file(plain, stats))) == 2
    assert stats.broken_lines[str(plain)] == 3


def test_inputs_expand_and_missing_input_is_a_clear_error(tmp_path):
    folder = tmp_path / "only_jsonl"
    folder.mkdir()
    write_jsonl(folder / "b.jsonl", [post("x1")])
    write_jsonl(folder / "a.ndjson", [post("x2")])
    (folder / "notes.txt").write_text("not a dump")
    assert [p.name for p in expand_inputs([folder])] == ["a.ndjson", "b.jsonl"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_inputs([tmp_path / "nope"])


def test_records_are_told_apart_by_fields_not_file_names(tmp_settings, tmp_path):
    mixed = write_jsonl(tmp_path / "everything.jsonl", [comment("q1", "p1"), post("p1", sub="Tokyo"), {"foo": 1}])
    report = ingest_to_threads(tmp_settings, inputs=[mixed], progress=False)
    assert report.cleaning["submissions"] == 1 and report.cleaning["comments"] == 1
    assert report.cleaning["unrecognised_records"] == 1
    assert report.threads_kept == 1


def test_failed_run_keeps_the_previous_dataset(tmp_settings, tmp_path):
    good = write_jsonl(tmp_path / "RS_good.jsonl", [post("g1"), comment("h1", "g1")])
    ingest_to_threads(tmp_settings, inputs=[good], progress=False)
    out = tmp_settings.path("threads")
    before = (out / "report.json").read_text()
    useless = write_jsonl(tmp_path / "RS_bad.jsonl", [post("g2", over_18=True)], extra_lines=["{oops"])
    with pytest.raises(IngestError, match="no thread survived"):
        ingest_to_threads(tmp_settings, inputs=[useless], progress=False)
    assert (out / "report.json").read_text() == before
    assert datasets.load_from_disk(str(out))["thread_id"] == ["g1"]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("&amp;amp;lt;3 &amp;#x200B;Tokyo\u200b&nbsp;rocks", "<3 Tokyo rocks"),
        ("the &amp;lt;b&amp;gt;sleeper bus&amp;lt;/b&amp;gt; in < 5 min<br>next", "the sleeper bus in < 5 min\nnext"),
        ("# Day 1\n**Shibuya** and *Harajuku* ~~$50~~ $65 ^(approx)", "Day 1\nShibuya and Harajuku $65 approx"),
        ("> quoted\n>> nested\n\n* one\n+ two", "quoted\nnested\n\n- one\n- two"),
        ("| Day | Cost |\n|---|--:|\n| 1 | ¥5,000 |", "Day, Cost\n1, ¥5,000"),
        ("See [JR guide](https://www.japan-guide.com/e/e2020.html) or https://www.jreast.co.jp/e/pass/.",
         "See JR guide (japan-guide.com) or jreast.co.jp."),
        ("[https://x.com/a](https://x.com/a) and [sub](/r/JapanTravel) >!twist!< `code` \\*literal\\*",
         "x.com and sub (r/JapanTravel) twist code *literal*"),
        ("snake_case_name stays, ---\n\n---\n\nend", "snake_case_name stays, ---\n\nend"),
    ],
)
def test_markdown_and_entities_become_readable_text(raw, clean):
    assert clean_text(raw) == clean


@pytest.mark.parametrize(
    "text",
    [
        "The Skyliner is ¥2,580 and the bus $12.50; hotels 1,500-2,000 yen, 500-1000 baht",
        "Dates: 2024-04-12, 12/04/2024, 12.04.2024; years 2018 2019 2020; trip 2019-2020",
        "Times 06:30, 14:35-16:10, 9.30-10.30",
        "Flights NH 106, UA837, JL5 and train 1234",
        "Budget 100 000 000 VND or 1.500.000 dong, 250000 points",
    ],
)
def test_numbers_that_are_not_phone_numbers_survive(text):
    assert clean_text(text) == text


@pytest.mark.parametrize(
    "phone",
    ["+81 3-1234-5678", "+1 (555) 123-4567", "(555) 123-4567", "020 7946 0958", "03-1234-5678",
     "+44 (0)20 7946 0958", "0044 20 7946 0958", "+819012345678", "555.123.4567"],
)
def test_phone_numbers_are_scrubbed(phone):
    assert clean_text(f"Call {phone} after 9:00.") == "Call [phone] after 9:00."


def test_value_coercion_and_permalinks():
    assert [coerce_int(v) for v in ("12", " 7.0 ", 3.9, None, "", "abc", True, float("nan"))] == [12, 7, 3, 0, 0, 0, 0, 0]
    assert full_permalink("https://old.reddit.com/r/tokyo/comments/abc/my_slug/", "Tokyo", "abc", "x") == \
        "https://www.reddit.com/r/Tokyo/comments/abc/my_slug/"
    assert full_permalink(None, "Tokyo", "abc", "Best ramen near Shinjuku?!") == \
        "https://www.reddit.com/r/Tokyo/comments/abc/best_ramen_near_shinjuku/"


ENV = {"REDDIT_CLIENT_ID": "cid-7f3a9", "REDDIT_CLIENT_SECRET": "s3cr3t-value-xyz", "REDDIT_USER_AGENT": "wayfarer/0.1 test"}


def test_missing_credentials_name_the_variables_and_never_the_secrets():
    with pytest.raises(MissingCredentialsError) as err:
        RedditCredentials.from_env({"REDDIT_CLIENT_SECRET": ENV["REDDIT_CLIENT_SECRET"]})
    message = str(err.value)
    assert "REDDIT_CLIENT_ID" in message and "REDDIT_USER_AGENT" in message
    assert "REDDIT_CLIENT_SECRET" not in message and ENV["REDDIT_CLIENT_SECRET"] not in message
    with pytest.raises(MissingCredentialsError, match="REDDIT_PASSWORD"):
        RedditCredentials.from_env({**ENV, "REDDIT_USERNAME": "someone"})


def test_api_records_match_the_dump_shape_and_clean_the_same(tmp_settings, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    credentials = RedditCredentials.from_env({**ENV, "REDDIT_USERNAME": "wayfarer_bot_user", "REDDIT_PASSWORD": "hunter2-pass"})
    reddit = create_reddit(credentials)  # offline: PRAW makes no request until data is read
    assert isinstance(reddit, praw.Reddit)
    assert reddit.config.client_id == ENV["REDDIT_CLIENT_ID"] and reddit.config.user_agent.startswith(ENV["REDDIT_USER_AGENT"])

    submission_data = post("s1", sub="Tokyo", score=99, num_comments=2, selftext="Best &amp; cheapest ramen?")
    submission = praw.models.Submission(reddit, _data=dict(submission_data))
    reply = comment("r1", "s1", subreddit="Tokyo", body="Fuunji near Shinjuku station, about ¥1,100.", score=12)
    nested = comment("r2", "s1", parent="t1_r1", subreddit="Tokyo", body="Seconding Fuunji, go before 11:00.", score=4)
    gone = comment("r3", "s1", subreddit="Tokyo", author="[deleted]", body="[deleted]")
    praw_comments = [praw.models.Comment(reddit, _data=dict(c, replies="")) for c in (reply, nested, gone)]

    api_records = [submission_to_record(submission)] + [comment_to_record(c, submission) for c in praw_comments]
    assert api_records[0]["subreddit"] == "Tokyo" and api_records[0]["author"] == "traveller_one"
    assert api_records[3]["author"] == "[deleted]"  # PRAW turns a deleted author into None
    for raw, converted in zip([submission_data, reply, nested, gone], api_records):
        assert {k: raw[k] for k in converted if k in raw} == {k: converted[k] for k in converted if k in raw}

    def threads_of(records):
        builder = ThreadBuilder(cleaning_config_from_settings(tmp_settings), tmp_settings.get("data.subreddits"))
        for record in records:
            builder.add(record)
        return builder.finish()

    api_threads = threads_of(api_records)
    assert api_threads == threads_of([submission_data, reply, nested, gone])
    assert [(c["comment_id"], c["depth"]) for c in api_threads[0]["comments"]] == [("r1", 0), ("r2", 1)]

    shown = repr(credentials) + str(credentials) + caplog.text + "".join(capsys.readouterr())
    for secret in ("cid-7f3a9", "s3cr3t-value-xyz", "hunter2-pass", "wayfarer_bot_user"):
        assert secret not in shown


def test_cli_ingest_imports_only_its_own_step(tmp_path):
    dump = write_jsonl(tmp_path / "RS_cli.jsonl", [post("c9", sub="Tokyo"), comment("d9", "c9", subreddit="Tokyo")])
    out = tmp_path / "threads"
    script = (
        "import sys; from training.__main__ import main\n"
        f"code = main(['ingest', '--input', {str(dump)!r}, '--output', {str(out)!r}])\n"
        "assert code == 0, code\n"
        "assert 'training.datasets' not in sys.modules and 'trl' not in sys.modules, 'other steps imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1 threads kept" in result.stdout and "Tokyo 1" in result.stdout
    assert datasets.load_from_disk(str(out))["thread_id"] == ["c9"]

    missing = subprocess.run(
        [sys.executable, "-m", "training", "ingest", "--input", str(tmp_path / "absent")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_demo_corpus_ingests_into_300_threads_across_20_subreddits(tmp_settings):
    report = ingest_to_threads(tmp_settings, progress=False)  # inputs default to paths.demo_corpus
    threads = datasets.load_from_disk(str(tmp_settings.path("threads")))
    assert report.threads_kept == len(threads) >= 300
    assert len(report.cleaning["threads_per_subreddit"]) >= 20
    assert set(threads["subreddit"]) <= set(tmp_settings.get("data.subreddits"))
    assert len(set(threads["thread_id"])) == len(threads)
    assert all(t["comments"] and len(t["comments"]) <= 6 for t in threads)
    assert all(t["permalink"].startswith(f"https://www.reddit.com/r/{t['subreddit']}/comments/{t['thread_id']}/") for t in threads)
    # The corpus's messy records (RS_general/RC_general) are all caught.
    assert {"deleted", "removed", "nsfw", "low_score", "other_subreddit", "duplicate_content"} <= set(report.cleaning["dropped_submissions"])
    assert {"deleted", "removed", "bot", "low_score", "orphan"} <= set(report.cleaning["dropped_comments"])
    assert report.broken_lines >= 1
    texts = " ".join(t["body"] + " ".join(c["body"] for c in t["comments"]) for t in threads)
    assert "&amp;" not in texts and "&#39;" not in texts and not re.search(r"(?<![\w/])/?u/\w", texts)


# --------------------------------------------------------------------- real data is kept
def training_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "WAYFARER_PROFILE": "local", "WAYFARER__PATHS__HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_pipeline_keeps_threads_ingested_from_real_dumps_and_ingest_adds_sources(tmp_path):
    """The issue's sequence: `ingest --input RS_… RC_…`, then `make run`'s pipeline. The user's
    threads must still be there, a second source must add to them, and only --demo adds the demo."""
    home, dumps = tmp_path / "home", tmp_path / "dumps"
    dumps.mkdir()
    write_zst(dumps / "RS_2024-01.zst", [post("r1", score=40), post("r2", sub="Tokyo", score=20)])
    write_zst(dumps / "RC_2024-01.zst", [comment("s1", "r1"), comment("s2", "r2")])
    first = training_cli(home, "ingest", "--input", str(dumps / "RS_2024-01.zst"), str(dumps / "RC_2024-01.zst"))
    assert first.returncode == 0, first.stderr
    threads_dir = home / "data" / "threads"
    assert datasets.load_from_disk(str(threads_dir))["thread_id"] == ["r1", "r2"]

    # A second month: one new thread, and r1 again with a newer score (the new reading wins).
    write_jsonl(dumps / "RS_2024-02.jsonl", [post("r3", sub="solotravel"), post("r1", score=99), comment("s3", "r3"),
                                             comment("s4", "r1")])
    second = training_cli(home, "ingest", "--input", str(dumps / "RS_2024-02.jsonl"))
    assert second.returncode == 0, second.stderr
    assert "1 new, 1 updated, 3 threads now from 2 source(s)" in second.stdout
    threads = {t["thread_id"]: t for t in datasets.load_from_disk(str(threads_dir))}
    assert sorted(threads) == ["r1", "r2", "r3"] and threads["r1"]["score"] == 99
    sources = load_report(threads_dir)["sources"]
    assert [(s["source"], s["demo"]) for s in sources] == [("dump", False), ("dump", False)]
    before = {p.name: p.read_bytes() for p in threads_dir.iterdir()}

    pipeline = training_cli(home, "pipeline", "--until", "ingest")
    assert pipeline.returncode == 0, pipeline.stderr
    assert "the threads hold your data" in pipeline.stdout and "RS_2024-01.zst" in pipeline.stdout
    assert {p.name: p.read_bytes() for p in threads_dir.iterdir()} == before  # untouched
    forced = training_cli(home, "pipeline", "--until", "ingest", "--force", "ingest")
    assert forced.returncode == 0, forced.stderr
    assert {p.name: p.read_bytes() for p in threads_dir.iterdir()} == before  # --force does not overwrite them

    with_demo = training_cli(home, "pipeline", "--until", "ingest", "--demo")
    assert with_demo.returncode == 0, with_demo.stderr
    ids = set(datasets.load_from_disk(str(threads_dir))["thread_id"])
    assert {"r1", "r2", "r3"} <= ids and len(ids) >= 300  # the demo's threads joined the user's
    assert datasets.load_from_disk(str(threads_dir)).filter(lambda t: t["thread_id"] == "r1")[0]["score"] == 99


def test_pipeline_ingests_the_demo_only_into_an_empty_home_and_refreshes_only_the_demo(tmp_settings):
    from training.ingest import sources_other_than_demo
    from training.pipeline import run_pipeline

    threads_dir = tmp_settings.path("threads")
    outcome = run_pipeline(tmp_settings, until="ingest", log=lambda line: None)
    assert [name for name, _ in outcome.ran] == ["ingest"] and sources_other_than_demo(tmp_settings) == []
    demo_ids = datasets.load_from_disk(str(threads_dir))["thread_id"]
    assert len(demo_ids) >= 300
    # Only the demo's own threads are there: --force remakes them from the demo corpus.
    outcome = run_pipeline(tmp_settings, until="ingest", force={"ingest"}, log=lambda line: None)
    assert [name for name, _ in outcome.ran] == ["ingest"]
    assert datasets.load_from_disk(str(threads_dir))["thread_id"] == demo_ids
