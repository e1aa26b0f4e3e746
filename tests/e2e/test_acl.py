"""Topic, group and pipeline limits on a user (Kafka-style ACLs by name or prefix), over the
HTTP API and the Kafka listener with a real client: refused topics and groups get 403,
TOPIC_AUTHORIZATION_FAILED or GROUP_AUTHORIZATION_FAILED, listings, Kafka Metadata,
ListGroups and OffsetFetch leave them out, a pipeline's rows need its topics, an ACL change
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
        # heart_rate is within heart_*, but its rows are also its output topic's records,
        # which tia may not read: its sessions, live stream and recent rows are refused.
        for path in ["/v1/sessions", "/v1/sessions/stream", "/v1/pipelines/heart_rate/stream"]:
            r = call(s, tia, "GET", path)
            assert r.status_code == 403 and '"heart_rate"' in r.json()["error"]["message"], (path, r.text)
        described = call(s, tia, "GET", "/v1/pipelines/heart_rate").json()
        assert "recent" not in described and "heart_rate" in described["recent_hidden"], described
        cli(s, "users", "acl", "tia", "--topic", "team-a.*", "--topic", TOPIC, "--topic", "heart_rate")
        time.sleep(1)  # the server re-reads the principals file within 250 ms
        assert call(s, tia, "GET", "/v1/sessions").status_code == 200
        assert "recent" in call(s, tia, "GET", "/v1/pipelines/heart_rate").json()

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
        # The running server reloads the users file within a moment; wait until it has.
        deadline = time.time() + 10
        while call(s, lim, "GET", "/v1/whoami").json().get("limits", {}).get("topics") != ["team-a.*"] and time.time() < deadline:
            time.sleep(0.05)
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


def test_group_limits_over_kafka_and_http(tmp_path):
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient
    s, _ = start(tmp_path)
    try:
        admin = token_for(s, "root", "admin")
        hidden = f"hidden-{uuid.uuid4().hex[:6]}"
        assert call(s, admin, "POST", "/v1/topics", {"name": hidden, "partitions": 1}).status_code == 201
        assert call(s, admin, "POST", f"/v1/topics/{TOPIC}/records", READING).status_code == 200
        cli(s, "users", "add", "gus", "--role", "operator", "--password-stdin", stdin=PASSWORD + "\n")
        out = cli(s, "users", "acl", "gus", "--topic", TOPIC, "--group", "app-*")
        assert "groups: app-*" in out, out
        gus = cli(s, "tokens", "create", "--user", "gus").strip().splitlines()[-1]
        # Offsets that gus may not see: a group outside app-*, and a topic outside its topics
        # in a group inside app-*.
        for group, topic in [("other-1", TOPIC), ("app-1", hidden)]:
            r = call(s, admin, "POST", f"/v1/groups/{group}/offsets", {"offsets": [{"topic": topic, "partition": 0, "offset": 0}]})
            assert r.status_code == 200, r.text

        def consume(group):
            c = Consumer({**conf(s, "gus"), "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
            try:
                c.subscribe([TOPIC])
                deadline = time.time() + 20
                while time.time() < deadline:
                    m = c.poll(0.5)
                    if m is None:
                        continue
                    if m.error():
                        return m.error().name()
                    c.commit(m, asynchronous=False)
                    return "ok"
                return "timeout"
            except KafkaException as e:
                return e.args[0].name()
            finally:
                c.close()

        assert consume("app-1") == "ok"
        assert consume("other-2") == "GROUP_AUTHORIZATION_FAILED"

        a = AdminClient(conf(s, "gus"))
        listed = {g.group_id for g in a.list_consumer_groups().result(15).valid}
        assert "app-1" in listed and "other-1" not in listed, listed
        # OffsetFetch for all of app-1's topics leaves out the one gus may not see.
        got = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions("app-1")])["app-1"].result(15)
        assert {tp.topic for tp in got.topic_partitions} == {TOPIC}, got.topic_partitions
        try:
            a.list_consumer_group_offsets([ConsumerGroupTopicPartitions("other-1")])["other-1"].result(15)
            raise AssertionError("offsets of a group outside the limits were fetched")
        except KafkaException as e:
            assert e.args[0].name() == "GROUP_AUTHORIZATION_FAILED", e
        described = a.describe_consumer_groups(["other-1"])["other-1"]
        try:
            described.result(15)
            raise AssertionError("a group outside the limits was described")
        except KafkaException as e:
            assert e.args[0].name() == "GROUP_AUTHORIZATION_FAILED", e

        # HTTP: the same limits.
        assert call(s, gus, "GET", "/v1/groups").json()["groups"] == ["app-1"]
        assert {"app-1", "other-1"} <= set(call(s, admin, "GET", "/v1/groups").json()["groups"])
        r = call(s, gus, "GET", "/v1/groups/other-1")
        assert r.status_code == 403 and "app-*" in r.json()["error"]["message"], r.text
        assert call(s, gus, "GET", "/v1/groups/app-none").status_code == 404
        offsets = call(s, gus, "GET", "/v1/groups/app-1").json()["offsets"]
        assert {o["topic"] for o in offsets} == {TOPIC}, offsets
        assert {o["topic"] for o in call(s, admin, "GET", "/v1/groups/app-1").json()["offsets"]} == {TOPIC, hidden}
        r = call(s, gus, "POST", "/v1/groups/app-1/offsets", {"offsets": [{"topic": hidden, "partition": 0, "offset": 0}]})
        assert r.status_code == 403, r.text
        assert call(s, gus, "POST", "/v1/groups/other-1/offsets", {"offsets": [{"topic": TOPIC, "partition": 0, "offset": 0}]}).status_code == 403
        assert call(s, gus, "POST", "/v1/groups/app-1/offsets", {"offsets": [{"topic": TOPIC, "partition": 0, "offset": 0}]}).status_code == 200
    finally:
        s.stop()
