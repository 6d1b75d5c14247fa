#!/usr/bin/env bash
# Smoke test of scripts/kafka-cluster against a real 3-node Kafka cluster:
# produce 1000 idempotent messages, kill the leader of partition 0, bring it
# back, and check that every message is still there exactly once.
#
# Runs on its own data dir and ports so it does not collide with a developer
# cluster started with the defaults. Override with RBK_KAFKA_DIR /
# RBK_KAFKA_PORT_BASE. The cluster is always stopped (and its data removed)
# on exit, pass or fail.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KC=$ROOT/scripts/kafka-cluster
export RBK_KAFKA_DIR=${RBK_KAFKA_DIR:-/tmp/rbk-kafka-smoke}
export RBK_KAFKA_PORT_BASE=${RBK_KAFKA_PORT_BASE:-19392}
TOPIC=smoke-$$
COUNT=1000
WORK=$(mktemp -d)
STEP=setup
T0=$SECONDS

say() { echo "[smoke +$((SECONDS - T0))s] $*" >&2; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  say "stopping cluster"
  "$KC" stop --clean || rc=1
  local f pid leftover
  leftover=$(grep -lzF -- "-Drbk.kafka.node=$RBK_KAFKA_DIR/node" /proc/[0-9]*/cmdline 2>/dev/null || true)
  for f in $leftover; do
    pid=${f#/proc/}; pid=${pid%/cmdline}
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == java ]]; then
      echo "broker JVM $pid of $RBK_KAFKA_DIR is still running after stop" >&2
      rc=1
    fi
  done
  rm -rf "$WORK"
  if ((rc == 0)); then
    echo "PASS: kafka cluster smoke test ($COUNT messages, leader failover and restore, $((SECONDS - T0)) s)"
    echo "1 passed, 0 failed"
  else
    echo "FAIL: kafka cluster smoke test (step: $STEP, exit $rc)"
    echo "0 passed, 1 failed"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { echo "assertion failed: $*" >&2; exit 1; }

STEP=start
BOOTSTRAP=$("$KC" start | tail -n 1)
[[ $BOOTSTRAP == *,*,* ]] || fail "start did not print a bootstrap list (got '$BOOTSTRAP')"
say "cluster up: $BOOTSTRAP"

STEP=create-topic
"$KC" create-topic "$TOPIC" 6 3

STEP=produce
seq 1 "$COUNT" | sed 's/^/msg-/' >"$WORK/sent"
kcat -P -b "$BOOTSTRAP" -t "$TOPIC" -X enable.idempotence=true -X acks=all <"$WORK/sent"
say "produced $COUNT messages"

STEP=fail-leader
LEADER=$("$KC" leader "$TOPIC" 0)
[[ $LEADER =~ ^[123]$ ]] || fail "leader of partition 0 is '$LEADER'"
say "leader of $TOPIC/0 is node $LEADER; killing it"
"$KC" fail "$LEADER"
"$KC" wait-isr "$TOPIC" 2
NEW_LEADER=$("$KC" leader "$TOPIC" 0)
[[ $NEW_LEADER != "$LEADER" ]] || fail "partition 0 still led by killed node $LEADER"
say "partition 0 moved to node $NEW_LEADER"
"$KC" status >&2 || true

STEP=restore
"$KC" restore "$LEADER"
"$KC" wait-isr "$TOPIC" 3
say "node $LEADER back, ISR 3 everywhere"

STEP=consume
kcat -C -b "$BOOTSTRAP" -t "$TOPIC" -o beginning -e -q -f '%s\n' >"$WORK/got"
total=$(wc -l <"$WORK/got")
distinct=$(sort -u "$WORK/got" | wc -l)
say "consumed $total messages, $distinct distinct"
((distinct == COUNT)) || fail "expected $COUNT distinct messages, got $distinct"
((total == COUNT)) || fail "expected $COUNT messages, got $total (duplicates)"
cmp -s <(sort "$WORK/sent") <(sort "$WORK/got") || fail "consumed messages differ from produced ones"

STEP=finished
