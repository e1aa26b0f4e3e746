"""Topic and pipeline limits on a user (Kafka-style ACLs by name or prefix), over the HTTP
API and the Kafka listener with a real client: refused topics get 403 or
TOPIC_AUTHORIZATION_FAILED, listings and Kafka Metadata leave them out, an ACL change
applies to open connections, and it is audited with the new limits."""
import json
import time
import uuid

from conftest import TOPIC
from test_auth import audit_events, call, cli, start, token_for
from test_kafka_auth import PASSWORD, READING, conf, produce


def test_a_limited_user_sees_and_uses_only_its_topics_and_pipelines(tmp_path):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient
    s, _ = start(tmp_path)
    try:
        admin = token_for(s, "root", "admin")
        other = f"team-b.{uuid.uuid4().hex[:6]}"
        mine = "team-a.readings"
        for name in [other, mine]:
            r = call(s, admin, "POST", "/v1/topics", {"name": name, "partitions": 1})
            assert r.status_code == 201, r.text
        cli(s, "users", "add", "tia", "--role", "operator", "--password-stdin", stdin=PASSWORD + "\n")
        out = cli(s, "users", "acl", "tia", "--topic", "team-a.*", "--topic", TOPIC, "--pipeline", "heart_*")
        assert "team-a.*" in out and "heart_*" in out, out
        assert "team-a.*" in cli(s, "users", "list")
        tia = cli(s, "tokens", "create", "--user", "tia").strip().splitlines()[-1]

        # HTTP: listings leave out what is outside the limits.
        names = [t["name"] for t in call(s, tia, "GET", "/v1/topics").json()["topics"]]
        assert mine in names and TOPIC in names and other not in names, names
        assert other in [t["name"] for t in call(s, admin, "GET", "/v1/topics").json()["topics"]]
        pipes = [p["name"] for p in call(s, tia, "GET", "/v1/pipelines").json()["pipelines"]]
        assert pipes == ["heart_rate"], pipes
        who = call(s, tia, "GET", "/v1/whoami").json()
        assert who["limits"] == {"topics": ["team-a.*", TOPIC], "pipelines": ["heart_*"]}, who
        # HTTP: a topic outside the limits is refused, one inside is served.
        assert call(s, tia, "POST", f"/v1/topics/{mine}/records", READING).status_code == 200
        r = call(s, tia, "POST", f"/v1/topics/{other}/records", READING)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
        assert "team-a.*" in r.json()["error"]["message"] and "users acl" in r.json()["error"]["message"], r.text
        assert call(s, tia, "GET", f"/v1/topics/{other}/partitions/0/records").status_code == 403
        assert call(s, tia, "GET", "/v1/sessions").status_code == 200, "heart_rate's sessions are within heart_*"

        # Kafka: Metadata hides other topics; produce inside works, outside is refused.
        md = AdminClient(conf(s, "tia")).list_topics(timeout=15)
        assert mine in md.topics and other not in md.topics, sorted(md.topics)
        assert produce(s, "tia", topic=mine) is None
        assert produce(s, "tia", topic=other) == "TOPIC_AUTHORIZATION_FAILED"
        md = AdminClient(conf(s, "tia")).list_topics(topic=other, timeout=15)
        assert md.topics[other].error is not None and md.topics[other].error.name() == "TOPIC_AUTHORIZATION_FAILED", md.topics[other]

        # A change applies to an open connection: the same producer is refused next time.
        p = Producer({**conf(s, "tia"), "acks": "all", "message.send.max.retries": 0, "message.timeout.ms": 10000})
        errors = []
        p.produce(mine, json.dumps(READING).encode(), on_delivery=lambda err, msg: errors.append(err))
        p.flush(15)
        assert errors == [None], errors
        cli(s, "users", "acl", "tia", "--topic", "team-c.*")
        time.sleep(1)  # the server re-reads the principals file within 250 ms
        p.produce(mine, json.dumps(READING).encode(), on_delivery=lambda err, msg: errors.append(err))
        p.flush(15)
        assert errors[1] is not None and errors[1].name() == "TOPIC_AUTHORIZATION_FAILED", errors
        assert "team-a.readings" not in [t["name"] for t in call(s, tia, "GET", "/v1/topics").json()["topics"]]

        # The admin API sets limits too; both changes are audited with the limits.
        r = call(s, admin, "PUT", "/v1/users/tia/acl", {"topics": None, "pipelines": ["nothing"]})
        assert r.status_code == 200, r.text
        assert call(s, tia, "GET", "/v1/pipelines").json()["pipelines"] == []
        assert call(s, tia, "POST", "/v1/pipelines/heart_rate/drain").status_code == 403
        assert call(s, tia, "POST", f"/v1/topics/{other}/records", READING).status_code == 200, "no topic limits any more"
        acl = lambda e: e["action"] == "user_acl" and e["target"] == "tia"
        events = [e for e in audit_events(s, admin, lambda e: acl(e) and "nothing" in e.get("detail", "")) if acl(e)]
        details = [json.loads(e["detail"]) for e in events]
        assert {"topics": ["team-c.*"], "pipelines": ["heart_*"]} in details and {"pipelines": ["nothing"]} in details, details
        assert call(s, tia, "PUT", "/v1/users/tia/acl", {}).status_code == 403, "only admins change limits"

        # A limited admin cannot route a topic outside its limits through a pipeline.
        lim = token_for(s, "lim", "admin")
        cli(s, "users", "acl", "lim", "--topic", "team-a.*")
        r = call(s, lim, "POST", "/v1/pipelines", {"name": "sneaky", "sql": f'SELECT * FROM "{TOPIC}" WHERE heartbeat > 100'})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden" and TOPIC in r.json()["error"]["message"], r.text
        assert "sneaky" not in [p["name"] for p in call(s, admin, "GET", "/v1/pipelines").json()["pipelines"]]

        # Deletions over Kafka are audited, refused ones too, with the user and address.
        a = AdminClient(conf(s, "tia"))
        try:
            a.delete_topics([other])[other].result(15)
            raise AssertionError("an operator deleted a topic")
        except Exception as e:
            assert e.args[0].name() == "TOPIC_AUTHORIZATION_FAILED", e
        cli(s, "users", "add", "ada", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
        ada = AdminClient(conf(s, "ada"))  # kept: a destroyed client fails its futures
        ada.delete_topics([other])[other].result(15)
        deleted = lambda e: e["action"] == "topic_delete" and e["target"] == other
        events = [e for e in audit_events(s, admin, lambda e: deleted(e) and e["principal"] == "ada") if deleted(e)]
        got = {(e["principal"], e["detail"]) for e in events}
        assert got == {("tia", "kafka DeleteTopics: refused"), ("ada", "kafka DeleteTopics")}, events
        assert all(e["source"] == "127.0.0.1" for e in events), events
    finally:
        s.stop()
