#!/usr/bin/env python3
"""RocketMQ compatibility scenario with PyPI `rocketmq` 0.4.4 (Apache's C++ client core, bundled).

Run by tests/e2e/compat.rs against `meridian dev`; nothing here is written against Meridian:
it is what a RocketMQ application does. Usage:

    rocketmq_python.py NAMESRV TOPIC GROUP COUNT
    rocketmq_python.py NAMESRV TOPIC GROUP retry
    rocketmq_python.py NAMESRV TOPIC GROUP pull

Sends COUNT messages tagged TagA (with keys) and COUNT tagged TagB with `send_sync`, then COUNT
TagA messages with `send_oneway`; a push consumer subscribed to `TagA` must receive exactly the
TagA messages (bodies, keys, tags; no TagB; every one at least once). Prints one JSON line:
{"sent": [...], "received": [...], "errors": [...]} and exits 0 when the checks pass.

`retry`: sends one message with delay level 2 (5 s) and one the consumer fails the first time
(RECONSUME_LATER, so the client sends it back); both must arrive, the delayed one no sooner than
its delay, the failed one again with reconsume_times 1, the same id and body.

`pull`: sends three TagA and three TagB messages and a 10 KiB TagA one (compressed by the client),
then a pull consumer reads every queue from offset 0 with the expression `TagA`: it must get
exactly the TagA messages, the large one inflated.

With ROCKETMQ_ACCESS_KEY and ROCKETMQ_SECRET_KEY set, every producer and consumer signs its
requests with them (`set_session_credentials`, RocketMQ's AccessKey signatures).
"""

import json
import sys
import threading
import time

import os

from rocketmq.client import Message, Producer, PullConsumer, PushConsumer, SendStatus


def connect(client, namesrv):
    """Points a producer or consumer at `namesrv`, signing with the environment's credentials."""
    client.set_namesrv_addr(namesrv)
    access_key = os.environ.get("ROCKETMQ_ACCESS_KEY")
    if access_key:
        client.set_session_credentials(access_key, os.environ["ROCKETMQ_SECRET_KEY"], "ALIYUN")


def text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else value


def retry(namesrv, topic, group):
    errors = []
    producer = Producer("compat-retry-producer")
    connect(producer, namesrv)
    producer.start()
    try:
        delayed = Message(topic)
        delayed.set_keys("delayed")
        delayed.set_tags("TagD")
        delayed.set_body("delayed-body")
        delayed.set_delay_time_level(2)
        sent_at = time.time()
        delayed_id = producer.send_sync(delayed).msg_id
        failing = Message(topic)
        failing.set_keys("fail-once")
        failing.set_tags("TagF")
        failing.set_body("fail-once-body")
        failing_id = producer.send_sync(failing).msg_id
    finally:
        producer.shutdown()

    deliveries = []
    lock = threading.Lock()
    done = threading.Event()

    def on_message(message):
        with lock:
            deliveries.append({"id": text(message.id), "body": text(message.body), "tag": text(message.tags),
                               "reconsume_times": message.reconsume_times, "at": time.time() - sent_at})
            failed_before = sum(1 for entry in deliveries if entry["body"] == "fail-once-body") == 1
            bodies = [entry["body"] for entry in deliveries]
            if bodies.count("fail-once-body") >= 2 and "delayed-body" in bodies:
                done.set()
        if text(message.body) == "fail-once-body" and failed_before:
            raise RuntimeError("failing the first delivery on purpose")

    consumer = PushConsumer(group)
    connect(consumer, namesrv)
    consumer.subscribe(topic, on_message, "TagD || TagF")
    consumer.start()
    try:
        done.wait(timeout=90)
        # A quiet period, not a condition: a stray further delivery shows in the report.
        time.sleep(1)
    finally:
        consumer.shutdown()
    with lock:
        delayed_seen = [entry for entry in deliveries if entry["body"] == "delayed-body"]
        failing_seen = [entry for entry in deliveries if entry["body"] == "fail-once-body"]
    if not delayed_seen:
        errors.append("the delayed message never arrived")
    elif delayed_seen[0]["at"] < 4.5 or delayed_seen[0]["id"] != delayed_id:
        errors.append(f"delayed message arrived as {delayed_seen[0]} (id {delayed_id}, delay 5 s)")
    if len(failing_seen) < 2:
        errors.append(f"the failed message was not redelivered: {failing_seen}")
    else:
        again = failing_seen[1]
        if again["id"] != failing_id or again["reconsume_times"] != 1 or again["tag"] != "TagF":
            errors.append(f"redelivery {again} does not match the message {failing_id} retried once")
    print(json.dumps({"deliveries": deliveries, "errors": errors}))
    return 0 if not errors else 1


def pull(namesrv, topic, group):
    errors = []
    producer = Producer("compat-pull-producer")
    connect(producer, namesrv)
    producer.start()
    sent = {}
    try:
        for tag in ("TagA", "TagB"):
            for index in range(3):
                message = Message(topic)
                message.set_keys(f"pull-{tag}-{index}")
                message.set_tags(tag)
                message.set_body(f"pull-{tag}-{index}")
                sent[f"pull-{tag}-{index}"] = producer.send_sync(message).msg_id
        # Over the client's 4 KiB threshold: the C++ core sends it zlib-compressed.
        big = Message(topic)
        big.set_keys("pull-big")
        big.set_tags("TagA")
        big.set_body("pull-TagA-big-" + "x" * 10000)
        sent["pull-TagA-big-" + "x" * 10000] = producer.send_sync(big).msg_id
    finally:
        producer.shutdown()
    consumer = PullConsumer(group)
    connect(consumer, namesrv)
    consumer.start()
    received = []
    want = sorted(body for body in sent if "TagA" in body)
    try:
        # A pull right after a send may find the queue not yet dispatched (NO_NEW_MSG), as on a
        # Java broker: poll again, as applications do, from where the last pass stopped.
        deadline = time.time() + 30
        while time.time() < deadline:
            for message in consumer.pull(topic, "TagA"):
                received.append({"id": text(message.id), "body": text(message.body), "tag": text(message.tags)})
            if len(received) >= len(want):
                break
            time.sleep(0.2)
    finally:
        consumer.shutdown()
    bodies = sorted(entry["body"] for entry in received)
    if bodies != want:
        errors.append(f"pulled {[body[:40] for body in bodies]}, expected {[body[:40] for body in want]}")
    for entry in received:
        if sent.get(entry["body"]) != entry["id"]:
            errors.append(f"pulled {entry['body'][:40]} as {entry['id']}, the producer got {sent.get(entry['body'])}")
    print(json.dumps({"received": received, "errors": errors}))
    return 0 if not errors else 1


def main():
    if sys.argv[4] == "retry":
        return retry(sys.argv[1], sys.argv[2], sys.argv[3])
    if sys.argv[4] == "pull":
        return pull(sys.argv[1], sys.argv[2], sys.argv[3])
    namesrv, topic, group, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    errors = []
    sent = []
    producer = Producer("compat-producer")
    connect(producer, namesrv)
    producer.start()
    try:
        for tag in ("TagA", "TagB"):
            for index in range(count):
                message = Message(topic)
                message.set_keys(f"key-{tag}-{index}")
                message.set_tags(tag)
                message.set_body(f"body-{tag}-{index}")
                message.set_property("origin", "rocketmq-python")
                result = producer.send_sync(message)
                if result.status != SendStatus.OK:
                    errors.append(f"send {tag} {index}: status {result.status}")
                sent.append({"id": result.msg_id, "tag": tag, "key": f"key-{tag}-{index}",
                             "body": f"body-{tag}-{index}", "mode": "sync"})
        for index in range(count):
            message = Message(topic)
            message.set_keys(f"key-oneway-{index}")
            message.set_tags("TagA")
            message.set_body(f"body-oneway-{index}")
            producer.send_oneway(message)
            sent.append({"id": None, "tag": "TagA", "key": f"key-oneway-{index}",
                         "body": f"body-oneway-{index}", "mode": "oneway"})
    finally:
        producer.shutdown()

    expected = {entry["body"]: entry for entry in sent if entry["tag"] == "TagA"}
    received = []
    lock = threading.Lock()
    done = threading.Event()

    def on_message(message):
        with lock:
            received.append({"id": text(message.id), "tag": text(message.tags), "key": text(message.keys),
                             "body": text(message.body), "topic": text(message.topic),
                             "origin": text(message.get_property("origin"))})
            if expected.keys() <= {entry["body"] for entry in received}:
                done.set()

    consumer = PushConsumer(group)
    connect(consumer, namesrv)
    consumer.subscribe(topic, on_message, "TagA")
    consumer.start()
    try:
        done.wait(timeout=90)
        # The quiet period is what is tested: anything else the broker would deliver (a TagB
        # message, a duplicate) arrives soon after.
        time.sleep(2)
    finally:
        consumer.shutdown()

    with lock:
        got = {entry["body"] for entry in received}
        for body in sorted(expected.keys() - got):
            errors.append(f"never received {body}")
        for entry in received:
            want = expected.get(entry["body"])
            if want is None:
                errors.append(f"received a message not subscribed to: {entry}")
                continue
            if entry["tag"] != "TagA" or entry["key"] != want["key"] or entry["topic"] != topic:
                errors.append(f"received {entry}, expected {want}")
            if want["mode"] == "sync" and entry["id"] != want["id"]:
                errors.append(f"received id {entry['id']} for {entry['body']}, the producer got {want['id']}")
            if want["mode"] == "sync" and entry["origin"] != "rocketmq-python":
                errors.append(f"user property lost on {entry['body']}: {entry['origin']!r}")
    print(json.dumps({"sent": sent, "received": received, "errors": errors}))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
