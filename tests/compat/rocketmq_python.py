#!/usr/bin/env python3
"""RocketMQ compatibility scenario with PyPI `rocketmq` 0.4.4 (Apache's C++ client core, bundled).

Run by tests/e2e/compat.rs against `meridian dev`; nothing here is written against Meridian:
it is what a RocketMQ application does. Usage:

    rocketmq_python.py NAMESRV TOPIC GROUP COUNT

Sends COUNT messages tagged TagA (with keys) and COUNT tagged TagB with `send_sync`, then COUNT
TagA messages with `send_oneway`; a push consumer subscribed to `TagA` must receive exactly the
TagA messages (bodies, keys, tags; no TagB; every one at least once). Prints one JSON line:
{"sent": [...], "received": [...], "errors": [...]} and exits 0 when the checks pass.
"""

import json
import sys
import threading
import time

from rocketmq.client import Message, Producer, PushConsumer, SendStatus


def main():
    namesrv, topic, group, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    errors = []
    sent = []
    producer = Producer("compat-producer")
    producer.set_namesrv_addr(namesrv)
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

    def text(value):
        return value.decode("utf-8") if isinstance(value, bytes) else value

    def on_message(message):
        with lock:
            received.append({"id": text(message.id), "tag": text(message.tags), "key": text(message.keys),
                             "body": text(message.body), "topic": text(message.topic),
                             "origin": text(message.get_property("origin"))})
            if expected.keys() <= {entry["body"] for entry in received}:
                done.set()

    consumer = PushConsumer(group)
    consumer.set_namesrv_addr(namesrv)
    consumer.subscribe(topic, on_message, "TagA")
    consumer.start()
    try:
        done.wait(timeout=90)
        # Anything else the broker would deliver (a TagB message, a duplicate) arrives soon after.
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
