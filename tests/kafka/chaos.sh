#!/usr/bin/env bash
# Chaos suite: librobustkafka against a real 3-node Kafka cluster whose
# partition leaders are killed with kill -9 while messages flow, and whose
# brokers fail gray: frozen (SIGSTOP, sockets open, nothing answers) or cut
# off from everyone by firewall rules, while still running.
#
#  1. start the cluster (own data dir and ports), topic with 6 partitions, RF 3
#  2. produce >= 200,000 keyed messages through the singleton producer while
#     the leader of a partition is killed and restarted, again and again
#     (>= 6 kills and until 200,000 are acked, every node at least once, each
#     kill only once every partition is back to ISR 3); between the kills,
#     four gray rounds of RBK_CHAOS_GRAY_S (20) s each: freeze the leader of
#     a partition, freeze the group coordinator, partition a leader, partition
#     the coordinator. Every delivery report is recorded by id, with its
#     latency (report time - send time)
#  3. consume with a group of 2 processes that UPSERT into one SQLite store;
#     one of them is killed with kill -9 mid-run and restarted
#  4. offset out of range for real: stop the group, DeleteRecords past its
#     committed offset, start a consumer: the partition must be quarantined,
#     the hook must fire with the right watermarks, nothing of it handled
#     until rbk_consumer_resolve(EARLIEST), then it resumes at the log start
#  4a. read the whole topic back: no id may be in the log twice (except
#     records marked rbk-resent by a fatal-error recovery)
#  5. verify by id, as sets; the last line is
#     chaos: acked=N failed=0 lost=0 duplicates_to_handler=0 redelivered=R reordered=0 auto_resets=0 kills=K quarantines=Q
#            freezes=F partitions=P max_delivery_ms=M p99_delivery_ms=Q cross_member_redelivered=R
#     (one line); it fails above RBK_CHAOS_MAX_DELIVERY_MS (20000) or a 99th
#     percentile of the messages sent during the gray rounds above
#     RBK_CHAOS_P99_DELIVERY_MS (15000). At the end no firewall rule, frozen
#     node or node JVM of the suite may be left.
#
# docs/kafka-cluster.md describes it. Knobs (environment):
#   RBK_CHAOS_MESSAGES (200000)  RBK_CHAOS_RATE (2500 msg/s while killing)
#   RBK_CHAOS_KILLS (6, at least)  RBK_CHAOS_DOWN_S (3, how long a killed node stays down)
#   RBK_CHAOS_DEADLINE (960 s for the whole suite)  RBK_CHAOS_KEEP=1 keeps the work dir
#   RBK_CHAOS_GRAY (1; 0 skips the gray rounds)  RBK_CHAOS_GRAY_S (20)
#   RBK_CHAOS_MAX_DELIVERY_MS (20000)  RBK_CHAOS_P99_DELIVERY_MS (15000)
#   RBK_CHAOS_PRODUCER_CONF / RBK_CHAOS_CONSUMER_CONF ("name=value,..." extra settings)
#   RBK_KAFKA_DIR / RBK_KAFKA_PORT_BASE (default: a free base from 19550 up)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KC=$ROOT/scripts/kafka-cluster
BUILD=${RBK_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
CHAOS=$BUILD/tests/kafka/chaos

MESSAGES=${RBK_CHAOS_MESSAGES:-200000}
RATE=${RBK_CHAOS_RATE:-2500}
KILLS=${RBK_CHAOS_KILLS:-6}
MIN_KILLS=5
DOWN_S=${RBK_CHAOS_DOWN_S:-3}
DEADLINE_S=${RBK_CHAOS_DEADLINE:-960}
GRAY=${RBK_CHAOS_GRAY:-1}
GRAY_S=${RBK_CHAOS_GRAY_S:-20}
MAX_DELIVERY_MS=${RBK_CHAOS_MAX_DELIVERY_MS:-20000}
P99_DELIVERY_MS=${RBK_CHAOS_P99_DELIVERY_MS:-15000}
TOPIC=chaos-$$
GROUP=chaos-group-$$
OOR_PARTITION=2
T0=$SECONDS
STEP=setup
STEP_T0=$SECONDS
TIMES=""
WORK=
CHAOS_LINE=
CLUSTER_STARTED=0
declare -A PIDS=()   # name -> pid of background programs we started

say() { echo "[chaos +$((SECONDS - T0))s] $*" >&2; }
# step NAME: starts a new step and records how long the previous one took.
step() {
  TIMES+="${TIMES:+ }$STEP=$((SECONDS - STEP_T0))s"
  STEP=$1 STEP_T0=$SECONDS
}
fail() { say "FAIL: $*"; exit 1; }
remaining() { echo $((DEADLINE_S - (SECONDS - T0))); }
check_deadline() { (($(remaining) > 0)) || fail "suite deadline of ${DEADLINE_S} s reached (step: $STEP)"; }

# ------------------------------------------------------------ cleanup ---

stop_programs() {
  local name pid
  for name in "${!PIDS[@]}"; do
    pid=${PIDS[$name]}
    if running "$pid"; then
      say "killing leftover $name (pid $pid)"
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
}

cleanup() {
  local rc=$? at=$STEP
  trap - EXIT INT TERM
  step stop
  stop_programs
  if ((CLUSTER_STARTED)); then
    # Gray failures first: no rule and no frozen node may outlive the suite,
    # whatever step it died in (stop heals and thaws too; this says so).
    "$KC" heal >&2 || rc=1
    "$KC" thaw >&2 || rc=1
    say "stopping cluster"
    "$KC" stop --clean --kill >&2 || rc=1
    # Nothing of ours left: no firewall rule with our tag, no frozen or
    # running node JVM.
    if ! left=$("$KC" gray-state 2>&1); then
      say "FAIL: left behind: $left"
      rc=1
    fi
    if "$KC" status >/dev/null 2>&1 || (($? != 1)); then
      say "FAIL: a node JVM of the suite is still running"
      rc=1
    fi
  fi
  if [[ -n $WORK && -d $WORK ]]; then
    if ((rc == 0)) && [[ -z ${RBK_CHAOS_KEEP:-} ]]; then
      rm -rf "$WORK"
    else
      say "work files kept in $WORK"
    fi
  fi
  step finished
  STEP=$at
  echo "chaos-durations: $TIMES total=$((SECONDS - T0))s"
  if ((rc == 0)); then
    echo "PASS: chaos suite ($((SECONDS - T0)) s)"
  else
    echo "FAIL: chaos suite (step: $STEP, exit $rc, $((SECONDS - T0)) s)"
  fi
  if [[ -n $CHAOS_LINE ]]; then
    echo "$CHAOS_LINE"
  else
    echo "chaos: FAILED before verification (step: $STEP)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------- checks ---

[[ -x $CHAOS ]] || fail "$CHAOS is missing: build it with 'make check-kafka' (or 'make $BUILD/tests/kafka/chaos')"
command -v kcat >/dev/null || fail "kcat not found (apt-get install -y kcat)"
if ((GRAY)); then
  # The partition rounds change firewall rules (on this cluster's ports only).
  [[ $(id -u) -eq 0 ]] || fail "the gray rounds need root for iptables (RBK_CHAOS_GRAY=0 runs the kills only)"
  command -v iptables >/dev/null || fail "iptables not found (scripts/install-deps kafka; RBK_CHAOS_GRAY=0 runs the kills only)"
fi

# A port base nobody else uses: a lock per base, held for the whole run,
# plus a check that the ports are free (other suites, other work trees).
# Bases end in 50, so our ports (..50-52 in two hundreds) never overlap the
# ..92-94 ports of the default cluster, the smoke test and the admin suite.
ports_free() {
  local b=$1 p
  for p in $b $((b + 1)) $((b + 2)) $((b + 100)) $((b + 101)) $((b + 102)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && return 1
  done
  return 0
}
if [[ -z ${RBK_KAFKA_PORT_BASE:-} ]]; then
  for base in $(seq 19550 200 25550); do
    exec {PORTLOCK}>"/tmp/rbk-chaos-ports-$base.lock"
    if flock -n "$PORTLOCK" && ports_free "$base"; then
      export RBK_KAFKA_PORT_BASE=$base
      break
    fi
    exec {PORTLOCK}>&-
  done
  [[ -n ${RBK_KAFKA_PORT_BASE:-} ]] || fail "no free port base between 19550 and 25550"
fi
export RBK_KAFKA_DIR=${RBK_KAFKA_DIR:-/tmp/rbk-kafka-chaos-$RBK_KAFKA_PORT_BASE}
# Restarted brokers come back faster on a busy 2-core machine with the
# client compiler only (less JIT work competing with everything else).
export RBK_KAFKA_JVM_OPTS=${RBK_KAFKA_JVM_OPTS:--XX:TieredStopAtLevel=1}
WORK=$(mktemp -d /tmp/rbk-chaos.XXXXXX)
DB=$WORK/store.db
STOP=$WORK/chaos.stop
say "work dir $WORK, cluster dir $RBK_KAFKA_DIR, port base $RBK_KAFKA_PORT_BASE"

# A pid that exists and is not a zombie (kill -0 succeeds on zombies).
running() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}
alive() { [[ -n ${PIDS[$1]:-} ]] && running "${PIDS[$1]}"; }

# wait_exit NAME TIMEOUT: waits for a background program, returns its status.
wait_exit() {
  local name=$1 to=$2 pid=${PIDS[$1]} end=$((SECONDS + $2)) rc
  while running "$pid"; do
    if ((SECONDS >= end)); then
      say "$name (pid $pid) still running after $to s"
      return 124
    fi
    sleep 0.5
  done
  rc=0
  wait "$pid" || rc=$?
  unset "PIDS[$name]"
  return "$rc"
}

start_consumer() { # name instance
  "$CHAOS" consume -b "$BOOTSTRAP" -t "$TOPIC" -g "$GROUP" -d "$DB" \
    -l "$WORK/$2.hlog" -i "$2" >"$WORK/$2.out" 2>&1 &
  PIDS[$1]=$!
  say "consumer $1 started as $2 (pid $!)"
}

handled_lines() {
  local n
  n=$(grep -c '^H ' "$1" 2>/dev/null) || true
  echo "${n:-0}"
}

# ------------------------------------------------------------ cluster ---

step start-cluster
CLUSTER_STARTED=1
BOOTSTRAP=$("$KC" start | tail -n 1) || fail "the cluster did not start (see above)"
[[ $BOOTSTRAP == *,*,* ]] || fail "kafka-cluster start printed no bootstrap list (got '$BOOTSTRAP')"
say "cluster up: $BOOTSTRAP"

step create-topic
"$KC" create-topic "$TOPIC" 6 3 >&2
"$KC" wait-isr "$TOPIC" 3 120 >&2
"$CHAOS" store-init -d "$DB"

# ------------------------------------------------ produce and consume ---

step produce
"$CHAOS" produce -b "$BOOTSTRAP" -t "$TOPIC" -o "$WORK" -s "$STOP" -n "$MESSAGES" \
  -r "$RATE" -T $(($(remaining) - 120)) >"$WORK/producer.out" 2>&1 &
PIDS[producer]=$!
say "producer started (pid $!)"
start_consumer c1 c1a
start_consumer c2 c2a

# The consumers must be in business before the chaos starts (their group
# coordinator is one of the brokers that will be killed).
step consumers-start
end=$((SECONDS + 120))
until (($(handled_lines "$WORK/c1a.hlog") > 0 && $(handled_lines "$WORK/c2a.hlog") > 0)); do
  alive c1 && alive c2 && alive producer || fail "a program exited early (see $WORK/*.out)"
  ((SECONDS < end)) || fail "consumers handled nothing within 120 s"
  sleep 0.5
done
say "both consumers are handling messages"

# ------------------------------------------------------------- chaos ----

step chaos
declare -A KILLED=([1]=0 [2]=0 [3]=0)
CONSUMER_KILLED=0 NKILLS=0
: >"$WORK/kills"
: >"$WORK/gray"
acked_lines() { local n; n=$(wc -l <"$WORK/acked-main.log" 2>/dev/null) || true; echo "${n:-0}"; }

# gray_round freeze|partition leader|coordinator: the node is frozen or cut
# off for GRAY_S seconds, then thawed or healed. A leader round picks a node
# that does not coordinate the group when it can (the coordinator has its
# own rounds). Recorded in gray with wall-clock and monotonic times.
gray_round() {
  local how=$1 what=$2 coord node='' part=-1 p l s_ms s_ns e_ms e_ns
  coord=$("$KC" coordinator "$GROUP")
  if [[ $what == coordinator ]]; then
    node=$coord
  else
    for ((p = 0; p < 6; p++)); do
      l=$("$KC" leader "$TOPIC" "$p")
      if [[ -z $node || ($node == "$coord" && $l != "$coord") ]]; then node=$l part=$p; fi
    done
  fi
  read -r s_ms s_ns < <("$CHAOS" now)
  if [[ $how == freeze ]]; then "$KC" freeze "$node" >&2; else "$KC" partition "$node" >&2; fi
  local also=
  ((part >= 0)) && also=", leader of $TOPIC/$part"
  say "gray round: $how $what: node $node (coordinator $coord$also) for $GRAY_S s; $(acked_lines) acked so far"
  sleep "$GRAY_S"
  if [[ $how == freeze ]]; then "$KC" thaw "$node" >&2; else "$KC" heal "$node" >&2; fi
  read -r e_ms e_ns < <("$CHAOS" now)
  echo "$how-$what $node $part $s_ms $e_ms $s_ns $e_ns" >>"$WORK/gray"
}

kill_round() {
  local best='' p l
  # Target: among the nodes that lead a partition, the one killed least.
  for ((p = 0; p < 6; p++)); do
    l=$("$KC" leader "$TOPIC" "$p")
    if [[ -z $best ]] || ((KILLED[$l] < KILLED[$best])); then best=$l bestpart=$p; fi
  done
  "$KC" fail "$best" >&2
  KILLED[$best]=$((KILLED[$best] + 1))
  NKILLS=$((NKILLS + 1))
  echo "$(date +%s) $best $bestpart" >>"$WORK/kills"
  say "kill $NKILLS: node $best (leader of $TOPIC/$bestpart) killed with SIGKILL; $(acked_lines) acked so far"
  # Mid-run consumer kill, while the second broker kill is in progress.
  if ((NKILLS == 2)); then
    say "consumer c1a has handled $(handled_lines "$WORK/c1a.hlog") messages; kill -9"
    kill -KILL "${PIDS[c1]}"
    wait "${PIDS[c1]}" 2>/dev/null || true
    unset "PIDS[c1]"
    CONSUMER_KILLED=1
    start_consumer c1 c1b
  fi
  sleep "$DOWN_S"   # chaos timing: let clients run into the dead leader
  "$KC" restore "$best" >&2
}

# The rounds: kills with the gray rounds among them, while messages flow at
# full rate; then more kills, at least KILLS in all and until MESSAGES are
# acked, so every message of the minimum is sent during the chaos.
ROUNDS=(kill kill)
if ((GRAY)); then
  ROUNDS+=(freeze:leader kill freeze:coordinator kill partition:leader kill partition:coordinator kill)
fi
for ((i = 0; i < ${#ROUNDS[@]} || NKILLS < KILLS || $(acked_lines) < MESSAGES; i++)); do
  check_deadline
  # Each round only once every partition (ours and the group's offsets) is
  # fully replicated again.
  "$KC" wait-isr "$TOPIC" 3 180 >&2
  "$KC" wait-isr __consumer_offsets 3 180 >&2
  alive producer || fail "the producer exited during the chaos (see $WORK/producer.out)"
  r=${ROUNDS[i]:-kill}
  if [[ $r == kill ]]; then kill_round; else gray_round "${r%%:*}" "${r#*:}"; fi
done
"$KC" wait-isr "$TOPIC" 3 180 >&2
touch "$STOP"
say "chaos over: kills per node: 1=${KILLED[1]} 2=${KILLED[2]} 3=${KILLED[3]}; gray rounds: $(wc -l <"$WORK/gray")"
((CONSUMER_KILLED)) || fail "the consumer was never killed"

step flush
wait_exit producer $(($(remaining) - 60)) || fail "the producer failed (see $WORK/producer.out)"
tail -n 3 "$WORK/producer.out" >&2

step drain
# Wait until every acked id is in the store (by id; bounded, with a stall limit).
last='' since=$SECONDS
while :; do
  check_deadline
  alive c1 && alive c2 || fail "a consumer exited (see $WORK/c*.out)"
  st=$("$CHAOS" missing -o "$WORK" -d "$DB")
  missing=${st#missing=}; missing=${missing%% *}
  [[ $missing == 0 ]] && break
  if [[ $st != "$last" ]]; then last=$st since=$SECONDS; fi
  ((SECONDS - since < 120)) || fail "no progress for 120 s: $st"
  sleep 2
done
say "store holds every acked id ($st)"

step log
# The log itself, read back whole: an idempotent producer that rode through
# the kills wrote every id once. A message re-sent after a fatal-error
# recovery may legitimately be there twice: one copy carries rbk-resent,
# usually the second, but the first attempt (unmarked) can land after it when
# a request of the replaced librdkafka instance reaches a broker late. Any
# other repeated id is a duplicate.
kcat -C -b "$BOOTSTRAP" -t "$TOPIC" -o beginning -e -q -f '%p %o %h\n' >"$WORK/log.txt" \
  || fail "reading the topic back failed"
LOG_LINE=$("$CHAOS" log-check -l "$WORK/log.txt") || fail "checking the log failed"
say "$LOG_LINE"
[[ $LOG_LINE == *" duplicate_records=0 "* ]] || fail "the log holds duplicate records: $LOG_LINE"
[[ $LOG_LINE == *" no_id=0"* ]] || fail "records without an id in the log: $LOG_LINE"
recs=${LOG_LINE#log: records=}; recs=${recs%% *}
acked=$(acked_lines)
((recs >= acked)) || fail "the log holds $recs records, fewer than the $acked acked"

step stop-consumers
kill -TERM "${PIDS[c1]}" "${PIDS[c2]}"
wait_exit c1 60 || fail "consumer c1 did not stop cleanly (see $WORK/c1b.out)"
wait_exit c2 60 || fail "consumer c2 did not stop cleanly (see $WORK/c2a.out)"
for f in "$WORK"/c*.out; do grep -h 'stats:' "$f" >&2 || true; done

# ------------------------------------------------- offset out of range ---

step offset-out-of-range
OOR_RC=0
timeout --signal=KILL 400 "$CHAOS" oor -b "$BOOTSTRAP" -t "$TOPIC" -g "$GROUP" -d "$DB" \
  -l "$WORK/oor.hlog" -i oor -o "$WORK" -p "$OOR_PARTITION" -n 2000 >"$WORK/oor.out" 2>&1 || OOR_RC=$?
if ((OOR_RC)); then
  cat "$WORK/oor.out" >&2
  say "offset-out-of-range phase failed (exit $OOR_RC); verifying the rest anyway"
else
  grep -E '^chaos oor' "$WORK/oor.out" >&2 || true
fi

# -------------------------------------------------------------- verify ---

step verify
set +e
"$CHAOS" verify -o "$WORK" -d "$DB" -n "$MESSAGES" -K "$MIN_KILLS" \
  -M "$MAX_DELIVERY_MS" -P "$P99_DELIVERY_MS" >"$WORK/verify.out" 2>"$WORK/verify.err"
vrc=$?
set -e
cat "$WORK/verify.err" >&2
grep -v '^chaos: ' "$WORK/verify.out" >&2 || true
CHAOS_LINE=$(grep '^chaos: ' "$WORK/verify.out" | tail -n 1)
((vrc == 0)) || fail "verification failed"
((OOR_RC == 0)) || fail "offset-out-of-range phase failed"
