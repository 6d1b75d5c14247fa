#!/usr/bin/env bash
# rbk-admin against a real 3-node Kafka cluster:
#
#  1. start the cluster (own data dir and ports), a topic (1 partition, RF 3)
#     with 20 messages, the control topic (1 partition, RF 3)
#  2. commit offset 100 for the group (beyond the log end), start a
#     librobustkafka consumer: it must quarantine the partition
#  3. `rbk-admin status` shows QUARANTINED with the incident key and the
#     owning member (DescribeGroups works on a real broker)
#  4. `rbk-admin resolve ... 5 --yes` from this shell: acknowledged by the
#     consumer, which then handles exactly offsets 5..19
#  5. a second resolve of the same incident is refused (exit 4)
#  6. with the consumer stopped: a new out-of-range commit is resolved by a
#     direct commit (group Empty), visible in status as resolved
#  7. `rbk-admin cluster-status`, `fail 3`, `restore 3` wrap kafka-cluster
#
# Knobs: RBK_KAFKA_DIR / RBK_KAFKA_PORT_BASE (default: a free base from 19692
# up), RBK_ADMIN_KEEP=1 keeps the work dir.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KC=$ROOT/scripts/kafka-cluster
BUILD=${RBK_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
ADMIN=$BUILD/bin/rbk-admin
HELPER=$BUILD/tests/kafka/admin_consumer
TOPIC=admin-$$
GROUP=admin-group-$$
CTL=rbk-control-$$
T0=$SECONDS
STEP=setup
WORK=
CLUSTER_STARTED=0
CPID=

say() { echo "[admin +$((SECONDS - T0))s] $*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $CPID ]] && kill -0 "$CPID" 2>/dev/null; then
    kill -KILL "$CPID" 2>/dev/null || true
    wait "$CPID" 2>/dev/null || true
  fi
  if ((CLUSTER_STARTED)); then
    say "stopping cluster"
    "$KC" stop --clean --kill >&2 || rc=1
  fi
  if [[ -n $WORK && -d $WORK ]]; then
    if ((rc == 0)) && [[ -z ${RBK_ADMIN_KEEP:-} ]]; then
      rm -rf "$WORK"
    else
      say "work files kept in $WORK"
    fi
  fi
  if ((rc == 0)); then
    echo "PASS: rbk-admin suite ($((SECONDS - T0)) s)"
  else
    echo "FAIL: rbk-admin suite (step: $STEP, exit $rc, $((SECONDS - T0)) s)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ -x $ADMIN ]] || fail "$ADMIN is missing: make tools"
[[ -x $HELPER ]] || fail "$HELPER is missing: make check-kafka (or make $BUILD/tests/kafka/admin_consumer)"
command -v kcat >/dev/null || fail "kcat not found (apt-get install -y kcat)"

ports_free() {
  local b=$1 p
  for p in $b $((b + 1)) $((b + 2)) $((b + 100)) $((b + 101)) $((b + 102)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && return 1
  done
  return 0
}
if [[ -z ${RBK_KAFKA_PORT_BASE:-} ]]; then
  for base in $(seq 19692 200 25692); do
    exec {PORTLOCK}>"/tmp/rbk-admin-ports-$base.lock"
    if flock -n "$PORTLOCK" && ports_free "$base"; then
      export RBK_KAFKA_PORT_BASE=$base
      break
    fi
    exec {PORTLOCK}>&-
  done
  [[ -n ${RBK_KAFKA_PORT_BASE:-} ]] || fail "no free port base between 19692 and 25692"
fi
export RBK_KAFKA_DIR=${RBK_KAFKA_DIR:-/tmp/rbk-kafka-admin-$RBK_KAFKA_PORT_BASE}
export RBK_KAFKA_CLUSTER=$KC
WORK=$(mktemp -d /tmp/rbk-admin.XXXXXX)
unset KAFKA_URL KAFKA_PREFIX

# run_admin RC_VAR ARGS...: runs rbk-admin, stdout+stderr to $WORK/out.
run_admin() {
  local __rc=$1; shift
  set +e
  "$ADMIN" "$@" </dev/null >"$WORK/out" 2>&1
  printf -v "$__rc" '%d' $?
  set -e
  sed 's/^/    | /' "$WORK/out" >&2
}

# wait_for SECONDS COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
}

STEP=cluster
say "starting cluster in $RBK_KAFKA_DIR (port base $RBK_KAFKA_PORT_BASE)"
# Set first: a start that fails half-way still leaves nodes to stop.
CLUSTER_STARTED=1
BS=$("$KC" start | tail -n1)
"$KC" create-topic "$TOPIC" 1 3 >&2
"$KC" create-topic "$CTL" 1 3 >&2
for i in $(seq 0 19); do echo "m$i"; done | kcat -P -b "$BS" -t "$TOPIC" -p 0 -X acks=all
A=(--bootstrap "$BS" --control-topic "$CTL")

STEP=quarantine
"$HELPER" commit -b "$BS" -t "$TOPIC" -g "$GROUP" -p 0 -O 100
"$HELPER" consume -b "$BS" -t "$TOPIC" -g "$GROUP" -c "$CTL" -d "$WORK" 2>"$WORK/consumer.log" &
CPID=$!
KEY="$GROUP/$TOPIC/0/100"
wait_for 60 grep -qxF "$KEY" "$WORK/quarantined" || fail "the consumer did not quarantine $TOPIC [0] as $KEY"
say "quarantined: $KEY"
[[ ! -s $WORK/handled ]] || fail "messages were handled while quarantined: $(head -3 "$WORK/handled")"

STEP=status
status_shows_owner() {
  run_admin rc status "${A[@]}" "$GROUP" "$TOPIC"
  ((rc == 0)) && grep -q "QUARANTINED" "$WORK/out" && grep -qF "incident $KEY" "$WORK/out" &&
    grep -q "state Stable, 1 member" "$WORK/out"
}
wait_for 30 status_shows_owner || fail "status does not show the quarantine and the running member"

STEP=resolve
# The listener reads the control topic from its end as of its start; it
# started with the consumer, long before this point.
run_admin rc resolve "${A[@]}" "$GROUP" "$TOPIC" 0 5 --yes --timeout 60
((rc == 0)) || fail "resolve exited $rc"
grep -q "resolved: incident $KEY" "$WORK/out" || fail "resolve did not report the incident"
grep -q "by consumer admin-test-consumer" "$WORK/out" || fail "resolve did not name the consumer"
handled_all() { [[ $(wc -l <"$WORK/handled") -ge 15 ]]; }
wait_for 30 handled_all || fail "the consumer did not handle offsets 5..19 ($(wc -l <"$WORK/handled") lines)"
sleep 1
expected=$(for i in $(seq 5 19); do echo "0 $i"; done)
[[ $(cat "$WORK/handled") == "$expected" ]] || fail "handled offsets are not exactly 5..19: $(tr '\n' ' ' <"$WORK/handled")"
say "resumed exactly at offset 5: 15 messages, 5..19 in order"

STEP=second-resolve
run_admin rc resolve "${A[@]}" "$GROUP" "$TOPIC" 0 latest --yes --timeout 20
((rc == 4)) || fail "a second resolve exited $rc, want 4"
grep -q "already resolved or not quarantined" "$WORK/out" || fail "no clear refusal"
run_admin rc resolve "${A[@]}" --incident "$KEY" "$GROUP" "$TOPIC" 0 latest --yes --timeout 20
((rc == 4)) || fail "a second resolve naming the incident exited $rc, want 4"
grep -q "already resolved" "$WORK/out" || fail "no clear refusal from the consumer"

STEP=stop-consumer
kill -TERM "$CPID"
wait "$CPID" || fail "the consumer did not stop cleanly"
CPID=

STEP=direct-commit
empty_group() {
  run_admin rc status "${A[@]}" "$GROUP" "$TOPIC"
  grep -q "state Empty" "$WORK/out"
}
wait_for 30 empty_group || fail "the group did not become Empty"
"$HELPER" commit -b "$BS" -t "$TOPIC" -g "$GROUP" -p 0 -O 500
run_admin rc resolve "${A[@]}" "$GROUP" "$TOPIC" 0 earliest --yes
((rc == 0)) || fail "direct resolve exited $rc"
grep -q "no running member" "$WORK/out" || fail "resolve did not commit directly"
run_admin rc status "${A[@]}" "$GROUP" "$TOPIC"
grep -Eq "$TOPIC +0 +0 .*resolved.*rbk-resolved:earliest:$GROUP/$TOPIC/0/500" "$WORK/out" ||
  fail "status does not show the direct resolution"

# Without a topic: every partition the group committed.
run_admin rc status "${A[@]}" "$GROUP"
((rc == 0)) || fail "status without a topic exited $rc"
grep -Eq "^$TOPIC +0 " "$WORK/out" || fail "status without a topic does not list $TOPIC [0]"

STEP=errors
run_admin rc resolve "${A[@]}" "$GROUP" "$TOPIC" 0 99 --yes
((rc == 4)) || fail "offset outside the watermarks exited $rc, want 4"
run_admin rc resolve "${A[@]}" "$GROUP" "$TOPIC" 3 latest --yes
((rc == 3)) || fail "unknown partition exited $rc, want 3"
run_admin rc status "${A[@]}" "no-such-group-$$"
((rc == 3)) || fail "unknown group exited $rc, want 3"

STEP=cluster-commands
run_admin rc cluster-status
((rc == 0)) || fail "cluster-status exited $rc"
run_admin rc fail 3
((rc == 0)) || fail "fail 3 exited $rc"
run_admin rc cluster-status
((rc == 1)) || fail "cluster-status with node 3 down exited $rc, want 1"
# As in the chaos suite: let the controller fence the node before it comes
# back.
"$KC" wait-isr "$TOPIC" 2 >&2 || fail "the ISR did not shrink after fail 3"
run_admin rc restore 3
((rc == 0)) || fail "restore 3 exited $rc"
"$KC" wait-isr "$TOPIC" 3 >&2 || fail "node 3 did not rejoin the ISR"
run_admin rc fail 7
((rc != 0)) || fail "fail 7 succeeded"
STEP=done
