#!/usr/bin/env bash
# Encrypted connections: librobustkafka against the secured listeners of a
# real 3-node Kafka cluster (scripts/kafka-cluster with RBK_KAFKA_SECURE=1).
#
#  1. TLS with client certificates, configured exactly as Apache Kafka on
#     Heroku hands it out (KAFKA_URL=kafka+ssl://..., KAFKA_TRUSTED_CERT,
#     KAFKA_CLIENT_CERT, KAFKA_CLIENT_CERT_KEY, KAFKA_PREFIX): produce and
#     consume while the leader of a partition is killed with kill -9 and
#     restored; every acked id must be consumed
#  2. SASL_SSL through rbk_conf properties (security.protocol, sasl.*,
#     ssl.ca.pem): PLAIN produce + consume; SCRAM-SHA-512 produce + consume
#     when librdkafka can (2.6.1+), else the known refusal (see
#     docs/security.md) with Kafka's Java client as the control
#  3. SASL_SSL with OAUTHBEARER: a token refresh callback mints unsecured
#     JWTs, which the brokers' default validator accepts: produce + consume
#     with a long-lived token; then tokens of OAUTH_TOKEN_S seconds that
#     expire while messages flow, so the callback runs again and every
#     message is delivered and in the log exactly once, as sent
#  3. the failures people hit, each with a clear error within a bound, no
#     retry storm (failed connections counted on the brokers) and no secret
#     in any output: wrong CA, expired client certificate, client
#     certificate from another CA, no client certificate, key that does not
#     match the certificate, wrong SASL password, PLAINTEXT client on the
#     TLS port, an OAUTHBEARER refresh callback that fails
#
# docs/security.md describes it. Knobs: RBK_KAFKA_DIR / RBK_KAFKA_PORT_BASE
# (default: a free base from 19460 up; the lock files that keep two runs
# apart live in RBK_PORT_LOCK_DIR, default /tmp), RBK_TLS_MESSAGES (3000),
# RBK_OAUTH_MESSAGES (500, at 20/s) and RBK_OAUTH_TOKEN_S (12) size the
# token expiry step; RBK_TLS_KEEP=1 keeps the work dir.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KC=$ROOT/scripts/kafka-cluster
BUILD=${RBK_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
CLIENT=$BUILD/tests/kafka/tls_client
MESSAGES=${RBK_TLS_MESSAGES:-3000}
RATE=200
PREFIX=rbk-tls-$$.
TOPIC=orders
GROUP=billing
BOUND_MS=4000     # message.timeout.ms of every failure probe
SLACK_MS=5000     # what a probe may take beyond its bound
STORM_MAX=40      # failed connections the brokers may see during one probe
OAUTH_MESSAGES=${RBK_OAUTH_MESSAGES:-500}
OAUTH_RATE=20
OAUTH_TOKEN_S=${RBK_OAUTH_TOKEN_S:-12}
T0=$SECONDS
STEP=setup
WORK=
CLUSTER_STARTED=0
declare -A PIDS=()

say() { echo "[tls +$((SECONDS - T0))s] $*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

cleanup() {
  local rc=$? name
  trap - EXIT INT TERM
  for name in "${!PIDS[@]}"; do
    kill -KILL "${PIDS[$name]}" 2>/dev/null || true
    wait "${PIDS[$name]}" 2>/dev/null || true
  done
  if ((CLUSTER_STARTED)); then
    say "stopping cluster"
    "$KC" stop --clean --kill >&2 || rc=1
  fi
  if [[ -n $WORK && -d $WORK ]]; then
    if ((rc == 0)) && [[ -z ${RBK_TLS_KEEP:-} ]]; then
      rm -rf "$WORK"
    else
      say "work files kept in $WORK"
    fi
  fi
  if ((rc == 0)); then
    echo "PASS: tls suite ($((SECONDS - T0)) s)"
  else
    echo "FAIL: tls suite (step: $STEP, exit $rc, $((SECONDS - T0)) s)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ -x $CLIENT ]] || fail "$CLIENT is missing: make check-kafka (or make $BUILD/tests/kafka/tls_client)"
command -v kcat >/dev/null || fail "kcat not found (apt-get install -y kcat)"
command -v openssl >/dev/null || fail "openssl not found (apt-get install -y openssl)"

# A port base nobody else uses: a lock per base, held for the whole run,
# plus a check that the ports are free. Bases end in 60: BASE..+2, +10..+12,
# +20..+22, +40..+42 and +100..+102 miss the ports of the other suites and
# the default cluster.
ports_free() {
  local b=$1 o p
  for o in 0 10 20 40 100; do
    for p in $((b + o)) $((b + o + 1)) $((b + o + 2)); do
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && return 1
    done
  done
  return 0
}
if [[ -z ${RBK_KAFKA_PORT_BASE:-} ]]; then
  for base in $(seq 19460 200 25460); do
    exec {PORTLOCK}>"${RBK_PORT_LOCK_DIR:-/tmp}/rbk-tls-ports-$base.lock"
    if flock -n "$PORTLOCK" && ports_free "$base"; then
      export RBK_KAFKA_PORT_BASE=$base
      break
    fi
    exec {PORTLOCK}>&-
  done
  [[ -n ${RBK_KAFKA_PORT_BASE:-} ]] || fail "no free port base between 19460 and 25460"
fi
export RBK_KAFKA_DIR=${RBK_KAFKA_DIR:-/tmp/rbk-kafka-tls-$RBK_KAFKA_PORT_BASE}
export RBK_KAFKA_SECURE=1
export RBK_KAFKA_JVM_OPTS=${RBK_KAFKA_JVM_OPTS:--XX:TieredStopAtLevel=1}
WORK=$(mktemp -d /tmp/rbk-tls.XXXXXX)
say "work dir $WORK, cluster dir $RBK_KAFKA_DIR, port base $RBK_KAFKA_PORT_BASE"

# No Heroku variable of the calling environment may leak into a step.
unset KAFKA_URL KAFKA_TRUSTED_CERT KAFKA_CLIENT_CERT KAFKA_CLIENT_CERT_KEY KAFKA_PREFIX

running() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}

# wait_exit NAME TIMEOUT: waits for a background program, returns its status.
wait_exit() {
  local pid=${PIDS[$1]} end=$((SECONDS + $2)) rc=0
  while running "$pid"; do
    ((SECONDS < end)) || { say "$1 (pid $pid) still running after $2 s"; return 124; }
    sleep 0.5
  done
  wait "$pid" || rc=$?
  unset "PIDS[$1]"
  return "$rc"
}

# ------------------------------------------------------------ cluster ---

STEP=start-cluster
CLUSTER_STARTED=1
"$KC" start >&2 || fail "the cluster did not start (see above)"
TLS=$RBK_KAFKA_DIR/tls
SSL_URL=$("$KC" bootstrap ssl | sed 's|[^,]*|kafka+ssl://&|g')
SASL_BS=$("$KC" bootstrap sasl_ssl)
OAUTH_BS=$("$KC" bootstrap oauth)
SASL_USER=$(<"$TLS/sasl.user")
"$KC" create-topic "$PREFIX$TOPIC" 3 3 >&2
"$KC" create-topic "${PREFIX}probe" 1 3 >&2
"$KC" create-topic sasl-plain 3 3 >&2
"$KC" create-topic sasl-scram 3 3 >&2
"$KC" create-topic oauth-long 3 3 >&2
"$KC" create-topic oauth-expiry 3 3 >&2
"$KC" wait-isr "$PREFIX$TOPIC" 3 120 >&2

# The Heroku environment of the SSL listener, for one command.
heroku_env() { # cert key [ca]
  env KAFKA_URL="$SSL_URL" KAFKA_PREFIX="$PREFIX" KAFKA_TRUSTED_CERT="$(<"${3:-$TLS/ca.pem}")" \
    KAFKA_CLIENT_CERT="$(<"$1")" KAFKA_CLIENT_CERT_KEY="$(<"$2")" "${@:4}"
}

# ---------------------------------------- 1. TLS with a broker kill -9 ---

STEP=tls-kill
heroku_env "$TLS/client.pem" "$TLS/client.key" "" \
  "$CLIENT" consume -t "$TOPIC" -g "$GROUP" -o "$WORK/consumed" -n "$MESSAGES" -T 240 \
  >"$WORK/consume.out" 2>&1 &
PIDS[consumer]=$!
heroku_env "$TLS/client.pem" "$TLS/client.key" "" \
  "$CLIENT" produce -t "$TOPIC" -n "$MESSAGES" -r "$RATE" -o "$WORK/acked" \
  >"$WORK/produce.out" 2>&1 &
PIDS[producer]=$!
say "producer and consumer started over TLS ($MESSAGES messages at $RATE/s)"
end=$((SECONDS + 60))
until [[ -s $WORK/consumed ]] && (($(wc -l <"$WORK/consumed") > 100)); do
  running "${PIDS[producer]}" && running "${PIDS[consumer]}" || fail "a program exited early (see $WORK/*.out)"
  ((SECONDS < end)) || fail "nothing consumed over TLS within 60 s (see $WORK/*.out)"
  sleep 0.5
done
victim=$("$KC" leader "$PREFIX$TOPIC" 0)
"$KC" fail "$victim" >&2
say "node $victim (leader of partition 0) killed with SIGKILL; $(wc -l <"$WORK/acked") acked so far"
sleep 3
"$KC" restore "$victim" >&2
say "node $victim restored"
wait_exit producer 200 || fail "the producer did not deliver everything (see $WORK/produce.out)"
wait_exit consumer 240 || fail "the consumer did not get every id (see $WORK/consume.out)"
acked=$(sort -u "$WORK/acked" | wc -l)
lost=$(comm -23 <(sort -u "$WORK/acked") <(sort -u "$WORK/consumed") | wc -l)
say "tls: acked=$acked consumed_distinct=$(sort -u "$WORK/consumed" | wc -l) lost=$lost"
((acked == MESSAGES)) || fail "only $acked of $MESSAGES acked"
((lost == 0)) || fail "$lost acked ids were never consumed"
# The prefix applied: the records are in the prefixed topic.
n=$(kcat -C -b "$("$KC" bootstrap)" -t "$PREFIX$TOPIC" -o beginning -e -q | wc -l)
((n >= MESSAGES)) || fail "$PREFIX$TOPIC holds $n records, expected at least $MESSAGES"

# ------------------------------------------------------- 2. SASL_SSL ---

STEP=sasl
sasl_props() { # mechanism password-file
  echo -X bootstrap.servers="$SASL_BS" -X security.protocol=SASL_SSL -X sasl.mechanisms="$1" \
    -X sasl.username="$SASL_USER" -X sasl.password=@"$2" -X ssl.ca.pem=@"$TLS/ca.pem"
}
sasl_round() { # mechanism topic
  local m=$1 t=$2
  # shellcheck disable=SC2046  # sasl_props prints separate words, no spaces inside
  "$CLIENT" produce -t "$t" -n 100 -r 1000 -o "$WORK/$t.acked" $(sasl_props "$m" "$TLS/sasl.password") \
    >"$WORK/$t.produce.out" 2>&1 || fail "SASL_SSL $m: produce failed (see $WORK/$t.produce.out)"
  # shellcheck disable=SC2046
  "$CLIENT" consume -t "$t" -g "g-$t" -n 100 -T 60 -o "$WORK/$t.consumed" $(sasl_props "$m" "$TLS/sasl.password") \
    >"$WORK/$t.consume.out" 2>&1 || fail "SASL_SSL $m: consume failed (see $WORK/$t.consume.out)"
  [[ -z $(comm -23 <(sort -u "$WORK/$t.acked") <(sort -u "$WORK/$t.consumed")) ]] \
    || fail "SASL_SSL $m: acked ids missing from the consumed ones"
  say "SASL_SSL $m: 100 produced and consumed"
}
sasl_round PLAIN sasl-plain
read -r rdhex rdver < <("$CLIENT" rdkafka-version)
if ((rdhex >= 0x020601ff)); then
  sasl_round SCRAM-SHA-512 sasl-scram
  SCRAM_NOTE="SCRAM-SHA-512 ok"
else
  # librdkafka before 2.6.1 sends a SCRAM nonce Kafka 4 rejects (librdkafka
  # pull request 4895): the refusal must be the clear authentication error,
  # and Kafka's Java client must accept the same credentials.
  # shellcheck disable=SC2046
  "$CLIENT" probe -t sasl-scram -T "$BOUND_MS" $(sasl_props SCRAM-SHA-512 "$TLS/sasl.password") \
    >"$WORK/scram.out" 2>"$WORK/scram.err" || true
  grep -q '^probe: result=failed err=RBK_ERR_DELIVERY kafka_err=_MSG_TIMED_OUT' "$WORK/scram.out" \
    && grep -q '^probe-error: .*_AUTHENTICATION: .*SCRAM-SHA-512' "$WORK/scram.out" \
    || { cat "$WORK/scram.out" >&2; fail "SCRAM-SHA-512 with librdkafka $rdver: not the expected authentication error"; }
  cat >"$WORK/java-scram.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$SASL_USER" password="$(<"$TLS/sasl.password")";
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.pem
EOF
  "$KC" topics --bootstrap-server "$SASL_BS" --command-config "$WORK/java-scram.properties" --list \
    >"$WORK/java-scram.out" 2>&1 || { cat "$WORK/java-scram.out" >&2; fail "Kafka's Java client could not authenticate with SCRAM-SHA-512"; }
  grep -qx sasl-scram "$WORK/java-scram.out" || fail "the Java client's topic list lacks sasl-scram"
  rm -f "$WORK/java-scram.properties"
  SCRAM_NOTE="SCRAM-SHA-512 refused with librdkafka $rdver (needs 2.6.1; Java client ok)"
  say "$SCRAM_NOTE"
fi

# ---------------------------------------------------- 3. OAUTHBEARER ---

STEP=oauth
oauth_props() {
  echo -X bootstrap.servers="$OAUTH_BS" -X security.protocol=SASL_SSL -X sasl.mechanisms=OAUTHBEARER \
    -X ssl.ca.pem=@"$TLS/ca.pem"
}
# oauth_calls FILE: "refreshes refused" of the client whose stderr is FILE.
oauth_calls() {
  sed -n 's/^oauth: refreshes=\([0-9]*\) refused=\([0-9]*\)$/\1 \2/p' "$1" | tail -n1
}
# A token valid for an hour: the callback runs once per client.
# shellcheck disable=SC2046  # oauth_props prints separate words, no spaces inside
"$CLIENT" produce -t oauth-long -n 100 -r 1000 -o "$WORK/oauth-long.acked" -A 3600 -k "$WORK/oauth.tokens" \
  $(oauth_props) >"$WORK/oauth-long.produce.out" 2>&1 || fail "OAUTHBEARER: produce failed (see $WORK/oauth-long.produce.out)"
# shellcheck disable=SC2046
"$CLIENT" consume -t oauth-long -g g-oauth-long -n 100 -T 60 -o "$WORK/oauth-long.consumed" -A 3600 \
  -k "$WORK/oauth.tokens" $(oauth_props) >"$WORK/oauth-long.consume.out" 2>&1 \
  || fail "OAUTHBEARER: consume failed (see $WORK/oauth-long.consume.out)"
[[ -z $(comm -23 <(sort -u "$WORK/oauth-long.acked") <(sort -u "$WORK/oauth-long.consumed")) ]] \
  || fail "OAUTHBEARER: acked ids missing from the consumed ones"
for f in "$WORK"/oauth-long.*.out; do
  read -r calls refused < <(oauth_calls "$f") || fail "no oauth: line in $f"
  ((calls >= 1 && refused == 0)) || fail "$f: $calls refresh calls, $refused tokens refused"
done
say "OAUTHBEARER: 100 produced and consumed with a token valid for an hour"

# Tokens that expire while messages flow: the brokers end each session at its
# token's expiry; librdkafka 2.2.0+ re-authenticates on the connection with
# the new token (KIP-368), older ones are disconnected and connect again.
# shellcheck disable=SC2046
"$CLIENT" consume -t oauth-expiry -g g-oauth-expiry -n "$OAUTH_MESSAGES" -T 120 -o "$WORK/oauth-expiry.consumed" \
  -A "$OAUTH_TOKEN_S" -k "$WORK/oauth.tokens" $(oauth_props) >"$WORK/oauth-expiry.consume.out" 2>&1 &
PIDS[oauth-consumer]=$!
# shellcheck disable=SC2046
"$CLIENT" produce -t oauth-expiry -n "$OAUTH_MESSAGES" -r "$OAUTH_RATE" -o "$WORK/oauth-expiry.acked" \
  -A "$OAUTH_TOKEN_S" -k "$WORK/oauth.tokens" $(oauth_props) >"$WORK/oauth-expiry.produce.out" 2>&1 &
PIDS[oauth-producer]=$!
say "OAUTHBEARER: $OAUTH_MESSAGES messages at $OAUTH_RATE/s with tokens valid for $OAUTH_TOKEN_S s"
wait_exit oauth-producer 120 || fail "OAUTHBEARER: the producer did not deliver everything (see $WORK/oauth-expiry.produce.out)"
wait_exit oauth-consumer 120 || fail "OAUTHBEARER: the consumer did not get every id (see $WORK/oauth-expiry.consume.out)"
acked=$(sort -u "$WORK/oauth-expiry.acked" | wc -l)
lost=$(comm -23 <(sort -u "$WORK/oauth-expiry.acked") <(sort -u "$WORK/oauth-expiry.consumed") | wc -l)
((acked == OAUTH_MESSAGES)) || fail "OAUTHBEARER: only $acked of $OAUTH_MESSAGES acked"
((lost == 0)) || fail "OAUTHBEARER: $lost acked ids were never consumed"
# The log holds every message exactly once, key and value as sent.
kcat -C -b "$("$KC" bootstrap)" -t oauth-expiry -o beginning -e -q -f '%k %s\n' | sort >"$WORK/oauth-expiry.log"
for ((i = 0; i < OAUTH_MESSAGES; i++)); do echo "t-$i tls message $i"; done | sort >"$WORK/oauth-expiry.sent"
cmp -s "$WORK/oauth-expiry.sent" "$WORK/oauth-expiry.log" \
  || fail "OAUTHBEARER: the log of oauth-expiry differs from what was sent ($(wc -l <"$WORK/oauth-expiry.log") records; diff $WORK/oauth-expiry.sent $WORK/oauth-expiry.log)"
read -r pcalls prefused < <(oauth_calls "$WORK/oauth-expiry.produce.out") || fail "no oauth: line from the producer"
read -r ccalls crefused < <(oauth_calls "$WORK/oauth-expiry.consume.out") || fail "no oauth: line from the consumer"
((pcalls >= 2 && prefused == 0)) || fail "OAUTHBEARER: the producer's callback ran $pcalls times ($prefused tokens refused); expected a refresh"
((ccalls >= 2 && crefused == 0)) || fail "OAUTHBEARER: the consumer's callback ran $ccalls times ($crefused tokens refused); expected a refresh"
# The brokers did end the sessions: without KIP-368 (librdkafka before
# 2.2.0) the client sees its connections closed once a token has expired.
drops=$(grep -c '^log: [0-9]* FAIL .*Disconnected (after [0-9]*ms in state UP' "$WORK/oauth-expiry.produce.out" || true)
if ((rdhex < 0x020200ff)); then
  ((drops >= 1)) || fail "OAUTHBEARER: librdkafka $rdver cannot re-authenticate, yet no connection of the producer was closed at token expiry"
fi
OAUTH_NOTE="OAUTHBEARER ok: $OAUTH_MESSAGES messages across token expiry (refresh callback: producer $pcalls, consumer $ccalls calls; producer connections closed by the brokers: $drops), log exact"
say "$OAUTH_NOTE"

# ------------------------------------------------------- 4. failures ---

STEP=failures
# Certificates for the failures, made with openssl in the work dir.
(
  set -e
  cd "$WORK"
  exec 2>openssl.log
  openssl req -x509 -newkey rsa:2048 -nodes -days 10 -subj "/CN=other-ca" -keyout other-ca.key -out other-ca.pem
  openssl req -newkey rsa:2048 -nodes -subj "/CN=rbk-client" -keyout alt.key -out alt.csr
  # Expired: signed by the cluster's CA, valid until a day before it was made.
  # OpenSSL 3.4 and later refuse -days -1 and take explicit dates instead.
  if openssl x509 -help 2>&1 | grep -q -- -not_after; then
    validity=(-not_before "$(date -u -d '2 days ago' +%Y%m%d%H%M%SZ)" -not_after "$(date -u -d '1 day ago' +%Y%m%d%H%M%SZ)")
  else
    validity=(-days -1)
  fi
  openssl x509 -req -in alt.csr -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" \
    -set_serial "0x$(openssl rand -hex 8)" "${validity[@]}" -out expired.pem
  openssl x509 -req -in alt.csr -CA other-ca.pem -CAkey other-ca.key \
    -set_serial "0x$(openssl rand -hex 8)" -days 10 -out foreign.pem
  echo "not-the-password-$RANDOM" >wrong.password
) || { cat "$WORK/openssl.log" >&2; fail "generating the failure certificates failed"; }

failed_auth_total() {
  local n=0 f c
  for f in "$RBK_KAFKA_DIR"/node*/logs/server.log; do
    c=$(grep -c 'Failed authentication with' "$f" 2>/dev/null) || true
    n=$((n + ${c:-0}))
  done
  echo "$n"
}

SUMMARY=()
# probe NAME EXPECT_RESULT ERROR_REGEX WRAPPER [PROPERTY...]: runs one probe
# (WRAPPER sets its environment) and checks the result, the error text
# (probe-error or probe-conf), the time and the number of failed
# connections the brokers logged meanwhile.
probe() {
  local name=$1 want=$2 re=$3 wrapper=$4 before after storm line elapsed errors
  shift 4
  before=$(failed_auth_total)
  "$wrapper" "$CLIENT" probe -t probe -T "$BOUND_MS" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || true
  after=$(failed_auth_total)
  storm=$((after - before))
  line=$(grep '^probe: ' "$WORK/$name.out" || true)
  [[ $line == "probe: result=$want "* ]] || { cat "$WORK/$name.out" >&2; fail "$name: expected result=$want, got '$line'"; }
  if [[ -n $re ]]; then
    grep -qE "^probe-(error|conf): .*($re)" "$WORK/$name.out" \
      || { cat "$WORK/$name.out" >&2; fail "$name: no error matching /$re/"; }
  fi
  elapsed=$(sed -n 's/.* elapsed_ms=\([0-9]*\).*/\1/p' <<<"$line")
  ((elapsed <= BOUND_MS + SLACK_MS)) || fail "$name: took $elapsed ms (bound $BOUND_MS + $SLACK_MS)"
  ((storm <= STORM_MAX)) || fail "$name: the brokers logged $storm failed connections in one probe (at most $STORM_MAX)"
  errors=$(sed -n 's/.* client_errors=\([0-9]*\).*/\1/p' <<<"$line")
  if [[ $want == failed ]]; then
    grep -q 'kafka_err=_MSG_TIMED_OUT' <<<"$line" || fail "$name: the send did not fail with _MSG_TIMED_OUT: $line"
    ((errors >= 1 && errors <= 6)) || fail "$name: $errors client_error events (expected 1..6: rate-limited per error)"
  fi
  SUMMARY+=("$name: $want in $elapsed ms, ${errors:-0} hook events, $storm failed connections on the brokers")
  say "$name: $(grep -E '^probe-(error|conf): ' "$WORK/$name.out" | head -n1 | cut -c1-220 | grep . || echo "$line")"
}

# Environments of the probes.
env_ok() { heroku_env "$TLS/client.pem" "$TLS/client.key" "" "$@"; }
env_wrong_ca() { heroku_env "$TLS/client.pem" "$TLS/client.key" "$WORK/other-ca.pem" "$@"; }
env_expired() { heroku_env "$WORK/expired.pem" "$WORK/alt.key" "" "$@"; }
env_foreign() { heroku_env "$WORK/foreign.pem" "$WORK/alt.key" "" "$@"; }
env_no_cert() { env KAFKA_URL="$SSL_URL" KAFKA_PREFIX="$PREFIX" KAFKA_TRUSTED_CERT="$(<"$TLS/ca.pem")" "$@"; }
env_mismatch() { heroku_env "$TLS/client.pem" "$WORK/alt.key" "" "$@"; }
env_plaintext() { env KAFKA_URL="${SSL_URL//kafka+ssl:/kafka:}" KAFKA_PREFIX="$PREFIX" "$@"; }
env_none() { "$@"; }   # properties only (-X)

probe baseline delivered '' env_ok
probe wrong-ca failed '_SSL: .*certificate verify failed' env_wrong_ca
probe expired-cert-env conf_error 'KAFKA_CLIENT_CERT expired' env_expired
# The same certificate given as properties reaches the broker, which refuses it.
probe expired-cert-broker failed '_TRANSPORT: .*(alert certificate unknown|alert bad certificate|certificate expired)' \
  env_none -X bootstrap.servers="$("$KC" bootstrap ssl)" -X rbk.prefix="$PREFIX" -X security.protocol=SSL \
  -X ssl.ca.pem=@"$TLS/ca.pem" -X ssl.certificate.pem=@"$WORK/expired.pem" -X ssl.key.pem=@"$WORK/alt.key" \
  -X ssl.endpoint.identification.algorithm=none
probe foreign-cert failed '_TRANSPORT: .*(alert certificate unknown|alert bad certificate|alert certificate required|unknown ca)' env_foreign
probe no-client-cert failed '_TRANSPORT: .*(alert bad certificate|alert certificate required|alert certificate unknown)' env_no_cert
probe key-mismatch conf_error 'KAFKA_CLIENT_CERT_KEY does not match KAFKA_CLIENT_CERT' env_mismatch
# shellcheck disable=SC2046  # sasl_props prints separate words, no spaces inside
probe wrong-password-plain failed '_AUTHENTICATION: .*Invalid username or password' \
  env_none -X rbk.prefix="$PREFIX" $(sasl_props PLAIN "$WORK/wrong.password")
# shellcheck disable=SC2046
probe wrong-password-scram failed '_AUTHENTICATION: .*invalid credentials' \
  env_none -X rbk.prefix="$PREFIX" $(sasl_props SCRAM-SHA-512 "$WORK/wrong.password")
probe plaintext-on-tls-port failed '_TRANSPORT: .*security.protocol' env_plaintext
# shellcheck disable=SC2046  # oauth_props prints separate words, no spaces inside
probe oauth-refresh-fails failed 'identity provider unreachable \(test\)' \
  env_none -X rbk.prefix="$PREFIX" -A fail $(oauth_props)
# librdkafka asks again about 10 s after a failure: no loop of callbacks.
read -r calls _ < <(oauth_calls "$WORK/oauth-refresh-fails.err") || fail "no oauth: line from the failing probe"
((calls >= 1 && calls <= 2)) || fail "oauth-refresh-fails: the refresh callback ran $calls times in one probe (expected 1..2)"

# ------------------------------------------------------- secrets ---

STEP=secrets
# No key body, PEM key block or password in anything a client printed.
: >"$WORK/secrets"
for k in "$TLS/client.key" "$WORK/alt.key"; do
  grep -v -- '-----' "$k" | sed -n '2p;10p;20p' >>"$WORK/secrets"
done
cat "$TLS/sasl.password" "$WORK/wrong.password" >>"$WORK/secrets"
# Every OAUTHBEARER token minted, whole and its claims part alone.
[[ -s $WORK/oauth.tokens ]] || fail "no OAUTHBEARER token was minted"
{ cat "$WORK/oauth.tokens"; cut -d. -f2 "$WORK/oauth.tokens"; } >>"$WORK/secrets"
echo "PRIVATE KEY-----" >>"$WORK/secrets"
outputs=("$WORK"/*.out "$WORK"/*.err)
if hits=$(grep -lF -f "$WORK/secrets" "${outputs[@]}" 2>/dev/null); then
  fail "a secret appears in: $hits"
fi
say "no key material, password or token in $(cat "${outputs[@]}" | wc -l) lines of client output"

STEP=done
say "tls: $MESSAGES messages over TLS through a kill -9 of node $victim, lost=0; SASL_SSL PLAIN ok; $SCRAM_NOTE; $OAUTH_NOTE"
for s in "${SUMMARY[@]}"; do say "  $s"; done
