#!/bin/sh
# One-shot topic setup for docker-compose.yml: runs in the Redpanda image (its rpk reaches the
# broker named by RPK_BROKERS) before any worker or aggregator starts. Safe to run again: a
# topic that exists keeps its partitions (changing them would move keys between partitions) and
# gets its settings enforced.
set -eu

# topic partitions [key=value]...
ensure_topic() {
    topic=$1
    partitions=$2
    shift 2
    if rpk topic list | awk 'NR > 1 { print $1 }' | grep -qxF "$topic"; then
        echo "topic $topic exists; enforcing its settings"
        for setting in "$@"; do
            rpk topic alter-config "$topic" --set "$setting"
        done
    else
        count=$#
        for setting in "$@"; do
            set -- "$@" --topic-config "$setting"
        done
        shift "$count"
        rpk topic create "$topic" --partitions "$partitions" --replicas 1 "$@"
    fi
}

# Raw events, keyed by target (one partition per target keeps its order): a week. Records up to
# the largest an event within the default parser limits makes (4 MiB events: 11,550,720 bytes);
# the worker refuses to start on a topic that could refuse an accepted event.
ensure_topic sluice.events 6 cleanup.policy=delete retention.ms=604800000 max.message.bytes=11550720
# target -> last acknowledged event id: compacted; its partitions are the fleet's unit of
# ownership (fleet.partitions in config/worker.yaml: 12), each read whole when assigned.
ensure_topic sluice.checkpoints 12 cleanup.policy=compact
# target -> latest merged snapshot: compacted, read at every aggregator start.
ensure_topic sluice.state 6 cleanup.policy=compact
# aggregator -> its URL and the partitions it owns (routing clients to a target's owner):
# compacted, one partition.
ensure_topic sluice.aggregators 1 cleanup.policy=compact
# Malformed deltas, for a person to look at: two weeks.
ensure_topic sluice.dead-letter 1 cleanup.policy=delete retention.ms=1209600000

rpk topic list
