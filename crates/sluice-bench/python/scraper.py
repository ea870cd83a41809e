"""The SSE-to-Kafka scraper a typical user writes in Python: requests + sseclient-py +
confluent-kafka, as their READMEs show them, with the settings and the six headers every
implementation of `sluice-bench pipeline` uses (acks=all, idempotence, linger.ms=5).

One thread per connection reads its stream and produces each event; the main thread waits
for the threads, then flushes (every record acknowledged) and exits 0, or exits 1 on the first
delivery error. Run by `sluice-bench` with the interpreter of its own virtualenv.
"""

import argparse
import sys
import threading
import time

import requests
import sseclient
from confluent_kafka import Producer


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--url", action="append", required=True)
    parser.add_argument("--target", action="append", required=True)
    parser.add_argument("--events", type=int, default=0, help="stop after N events in all")
    parser.add_argument("--producer-property", action="append", default=[])
    return parser.parse_args()


class Budget:
    """The events left to read, shared by the threads (0 = unbounded)."""

    def __init__(self, events):
        self.left = events
        self.bounded = events > 0
        self.lock = threading.Lock()

    def take(self):
        if not self.bounded:
            return True
        with self.lock:
            if self.left == 0:
                return False
            self.left -= 1
            return True


failures = []


def delivered(error, message):
    if error is not None:
        failures.append(str(error))


def stream(url, target, producer, topic, budget):
    connection = 0
    seq = 0
    while True:
        connection += 1
        response = requests.get(url, stream=True, headers={"Accept": "text/event-stream"})
        response.raise_for_status()
        client = sseclient.SSEClient(response)
        for event in client.events():
            if not budget.take():
                response.close()
                return
            seq += 1
            headers = [
                ("sse.id", event.id or ""),
                ("sse.event", event.event or "message"),
                ("sluice.target", target),
                ("sluice.received_at", str(int(time.time() * 1000))),
                ("sluice.connection", str(connection)),
                ("sluice.seq", str(seq)),
            ]
            while True:
                try:
                    producer.produce(
                        topic,
                        key=target,
                        value=event.data,
                        headers=headers,
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    # The local queue is full: serve delivery reports, then try again.
                    producer.poll(0.1)
            producer.poll(0)
        # The stream ended: reconnect, as an SSE client does.


def main():
    args = parse_args()
    if len(args.url) != len(args.target):
        sys.exit("one --target per --url")
    config = {
        "bootstrap.servers": args.brokers,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
    }
    for kv in args.producer_property:
        key, _, value = kv.partition("=")
        config[key] = value
    producer = Producer(config)
    budget = Budget(args.events)
    threads = [
        threading.Thread(
            target=stream,
            args=(url, target, producer, args.topic, budget),
            daemon=True,
        )
        for url, target in zip(args.url, args.target)
    ]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        producer.poll(0.1)
        if failures:
            sys.exit("delivery failed: " + failures[0])
    producer.flush()
    if failures:
        sys.exit("delivery failed: " + failures[0])


if __name__ == "__main__":
    main()
