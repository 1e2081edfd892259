#!/usr/bin/env bash
# Local single-node Kafka (KRaft, broker+controller in one JVM) for development, tests and CI.
#
#   stack/kafka.sh install   resolve the broker jars from Maven Central (skipped when up to date)
#   stack/kafka.sh up        install, format on first start, start, wait until ready, create topics;
#                            a running broker whose server.properties is out of date (e.g. a
#                            listener was added) is restarted once with the new one
#   stack/kafka.sh down      stop the broker (SIGTERM, then SIGKILL after a deadline)
#   stack/kafka.sh status    exit 0 running and answering, 1 running but not answering, 3 stopped
#
# There is no Kafka broker package on PyPI or Debian: the official broker comes from Maven Central
# (stack/kafka/pom.xml) and runs as `java -cp libs/* kafka.Kafka`, without the kafka-*.sh wrappers.
# State lives in <repo>/.stack/kafka (jars, data, server.properties, pid) and <repo>/.stack/logs.
#
# Listeners, all on 127.0.0.1: PLAINTEXT on KAFKA_PORT (what everything uses by default), SSL on
# KAFKA_SSL_PORT (9094) and SASL_SSL with SCRAM-SHA-256 on KAFKA_SASL_SSL_PORT (9095), both
# presenting the stack's certificate (stack/tls.sh, PEM key store: Kafka 2.7+ reads PEM). The
# SCRAM user (KAFKA_SASL_USERNAME_STACK, password generated once) is created through the Admin
# API after start; the ports and credentials go to .stack/stack.env under *_STACK names, which
# only tests read.
#
# Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_HEAP_OPTS
# ("-Xms256m -Xmx1g"), KAFKA_READY_TIMEOUT (90 s), KAFKA_STOP_TIMEOUT (60 s), STACK_PYTHON (the
# interpreter with confluent-kafka; default <repo>/.venv/bin/python, then python3).
#
# Surprises met while writing this:
# - kafka_2.13 4.1.1 depends on slf4j-api 1.7.36: the log4j2 binding must be the SLF4J 1.x one,
#   log4j-slf4j-impl. With log4j-slf4j2-impl the broker silently logs nothing (SLF4J NOP logger).
# - The lock's file descriptor must be closed for the JVM (`9>&-`): the broker would otherwise
#   inherit it and hold the lock for its whole life, and the next `up`/`down` would hang.
# - A broker we started from an earlier shell is not our child. If the machine's PID 1 does not
#   reap orphans, a stopped broker stays a zombie and /proc/<pid> keeps existing: "is it still
#   running" must treat state Z as stopped.
# - `StorageTool format --standalone` writes the controller endpoint (host:port) into the KRaft
#   voter set, so the controller port is fixed once the data folder is formatted (checked below).
# - log4j2's own JVM shutdown hook races Kafka's: the last shutdown lines went to stdout through a
#   fallback SimpleLogger. stack/kafka/log4j2.properties disables log4j2's hook.
# - The first consumer group takes ~3-4 s: the broker then creates __consumer_offsets (50
#   partitions). Later groups join in well under a second.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"  # ROOT, the stack's state root and logs, port_open
STACK_STATE="$STATE"
STATE="$STACK_STATE/kafka"
LIBS="$STATE/libs"
DATA="$STATE/data"
PROPS="$STATE/server.properties"
PIDFILE="$STATE/kafka.pid"
LOCKFILE="$STATE/.lock"
FORMATTED_PORT_FILE="$STATE/formatted-controller-port"
LOGDIR="$LOGS"
LOG="$LOGDIR/kafka.log"
STDOUT_LOG="$LOGDIR/kafka.stdout.log"
POM="$ROOT/stack/kafka/pom.xml"
LOG4J_CONFIG="$ROOT/stack/kafka/log4j2.properties"
TOPICS_PY="$ROOT/stack/kafka_topics.py"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_SSL_PORT="${KAFKA_SSL_PORT:-9094}"
KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-9095}"
TLS="$STACK_STATE/tls"
KEYSTORE="$STATE/keystore.pem"
SCRAM_USER="backup"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
READY_TIMEOUT="${KAFKA_READY_TIMEOUT:-90}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-60}"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

say() { echo "kafka.sh: $*"; }
die() { echo "kafka.sh: error: $*" >&2; exit 1; }

python_bin() {
    if [[ -n "${STACK_PYTHON:-}" ]]; then echo "$STACK_PYTHON"
    elif [[ -x "$ROOT/.venv/bin/python" ]]; then echo "$ROOT/.venv/bin/python"
    else command -v python3 || die "no python3 found (set STACK_PYTHON)"
    fi
}

# One `up`/`down`/`install` at a time: parallel test sessions may all call `up`.
take_lock() {
    mkdir -p "$STATE" "$LOGDIR"
    exec 9>"$LOCKFILE"
    flock -w 300 9 || die "another kafka.sh holds $LOCKFILE for more than 300 s"
}

# ---------------------------------------------------------------------------------------- jars

pom_sha() { sha256sum "$POM" | cut -d' ' -f1; }

libs_fresh() { [[ -f "$LIBS/.stamp" && "$(cat "$LIBS/.stamp")" == "$(pom_sha)" ]]; }

install_libs() {
    libs_fresh && return 0
    # Replacing jars under a running JVM breaks its lazy class loading.
    if broker_pid >/dev/null; then
        die "the broker jars are stale (pom.xml changed) but the broker is running: run '$0 down' first"
    fi
    command -v mvn >/dev/null || die "mvn not found (Maven resolves the broker jars)"
    rm -rf "$STATE"/libs.tmp.* "$LIBS.old"     # leftovers of an interrupted install
    local tmp
    tmp="$(mktemp -d "$STATE/libs.tmp.XXXXXX")"
    say "resolving Kafka broker jars with Maven into $LIBS ..."
    # Maven prints its errors on stdout (and stray colour codes even with -q -B): keep its
    # output in a log and show it only when it fails.
    if ! mvn -q -B -f "$POM" dependency:copy-dependencies \
            -DoutputDirectory="$tmp" -DincludeScope=runtime >"$LOGDIR/kafka-install.log" 2>&1; then
        rm -rf "$tmp"
        tail -n 40 "$LOGDIR/kafka-install.log" >&2
        die "mvn dependency:copy-dependencies failed (is Maven Central reachable?); log: $LOGDIR/kafka-install.log"
    fi
    # The stamp is written last, so a libs folder with a matching stamp is always complete;
    # the two renames leave at worst no libs folder, which the next install rebuilds.
    pom_sha >"$tmp/.stamp"
    chmod 755 "$tmp"                            # mktemp -d makes it 0700
    if [[ -e "$LIBS" ]]; then mv "$LIBS" "$LIBS.old"; fi
    mv "$tmp" "$LIBS"
    rm -rf "$LIBS.old"
    say "jars installed ($(find "$LIBS" -name '*.jar' | wc -l) jars)"
}

# ----------------------------------------------------------------------------------- process

# Alive and not a zombie (see the header: orphans may never be reaped here).
pid_running() {
    local pid="$1" state
    [[ -r "/proc/$pid/stat" ]] || return 1
    state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null)" || return 1
    [[ "$state" != "Z" && "$state" != "X" ]]
}

# Prints the pid of OUR broker: the pid file's process, only if it really is kafka.Kafka started
# with our server.properties (a stale pid file may point at a recycled pid).
broker_pid() {
    local pid cmdline
    [[ -f "$PIDFILE" ]] || return 1
    pid="$(cat "$PIDFILE" 2>/dev/null)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    pid_running "$pid" || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *" kafka.Kafka $PROPS"* ]] || return 1
    echo "$pid"
}

check_ports_free() {
    local port
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SSL_PORT" "$KAFKA_SASL_SSL_PORT"; do
        if port_open "$port"; then
            echo "kafka.sh: error: 127.0.0.1:$port is already in use by something that is not" \
                 "this repository's broker (no live pid in $PIDFILE)." >&2
            if command -v ss >/dev/null; then ss -ltnpH "sport = :$port" >&2 || true; fi
            echo "kafka.sh: stop it, or pick other ports with KAFKA_PORT / KAFKA_CONTROLLER_PORT /" \
                 "KAFKA_SSL_PORT / KAFKA_SASL_SSL_PORT." >&2
            exit 1
        fi
    done
}

show_log_tail() {
    echo "---- last 40 lines of $LOG ----" >&2
    # Kafka's state-change lines run to kilobytes: cut them so the tail stays readable.
    { tail -n 40 "$LOG" 2>/dev/null || echo "(no log yet)"; } | cut -c1-400 >&2
    if [[ -s "$STDOUT_LOG" ]]; then
        echo "---- last 20 lines of $STDOUT_LOG (JVM output) ----" >&2
        tail -n 20 "$STDOUT_LOG" >&2
    fi
}

# ------------------------------------------------------------------------------ configuration

# The broker's PEM key store: its private key (PKCS#8, unencrypted) followed by its certificate.
write_keystore() {
    [[ -s "$TLS/server.crt" && -s "$TLS/server.key" ]] || die "no TLS certificate in $TLS: run stack/tls.sh first"
    local tmp
    tmp="$(mktemp "$STATE/.keystore.XXXXXX")"
    cat "$TLS/server.key" "$TLS/server.crt" >"$tmp"
    chmod 600 "$tmp"
    if cmp -s "$tmp" "$KEYSTORE"; then rm -f "$tmp"; else mv "$tmp" "$KEYSTORE"; fi
}

# write_props FILE: the broker configuration this script wants (compared with the running one).
write_props() {
    local out="${1:-$PROPS}"
    cat >"$out" <<EOF
# Generated by stack/kafka.sh on every start: edit the script, not this file.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SSL://127.0.0.1:$KAFKA_SSL_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SSL://127.0.0.1:$KAFKA_SSL_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
# TLS listeners present the stack's certificate; clients are not asked for one.
ssl.keystore.type=PEM
ssl.keystore.location=$KEYSTORE
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.crt
ssl.client.auth=none
# SASL_SSL authenticates with SCRAM: the credentials live in the cluster metadata (Admin API).
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
# Dynamic quorum (formatted with --standalone): bootstrap servers, not a static voters list.
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
log.dirs=$DATA
num.partitions=1
default.replication.factor=1
# One broker: every internal topic must have replication factor 1 or it can never be created.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests start consumer groups constantly: no 3 s wait for more members to join.
group.initial.rebalance.delay.ms=0
# Topics come from stack/kafka_topics.py (or a restore), never from a typo in a producer.
auto.create.topics.enable=false
EOF
}

java_opts() {
    # Word splitting of KAFKA_HEAP_OPTS is intended (several flags in one variable).
    # shellcheck disable=SC2206
    local heap=($KAFKA_HEAP_OPTS)
    JAVA_OPTS=("${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
               "-Dkafka.logs.dir=$LOGDIR" "-Dlog4j2.configurationFile=$LOG4J_CONFIG")
}

storage_tool() {
    java_opts
    java "${JAVA_OPTS[@]}" -cp "$LIBS/*" kafka.tools.StorageTool "$@"
}

# KRaft refuses to start on an unformatted log dir; formatting twice would be refused too,
# so this runs only when meta.properties is missing (first start, or data deleted).
format_once() {
    if [[ -f "$DATA/meta.properties" ]]; then
        local formatted
        formatted="$(cat "$FORMATTED_PORT_FILE" 2>/dev/null || echo "$KAFKA_CONTROLLER_PORT")"
        if [[ "$formatted" != "$KAFKA_CONTROLLER_PORT" ]]; then
            die "$DATA was formatted with controller port $formatted, not $KAFKA_CONTROLLER_PORT" \
                "(the KRaft voter set records it): use KAFKA_CONTROLLER_PORT=$formatted, or" \
                "delete $DATA to start an empty cluster"
        fi
        return 0
    fi
    local cluster_id
    # Reuse an id from an interrupted first start so the id never changes under existing data.
    if [[ -s "$STATE/cluster.id" ]]; then
        cluster_id="$(cat "$STATE/cluster.id")"
    else
        cluster_id="$(storage_tool random-uuid | tail -n 1)"
        echo "$cluster_id" >"$STATE/cluster.id"
    fi
    say "first start: formatting $DATA for cluster $cluster_id"
    mkdir -p "$DATA"
    storage_tool format --standalone -t "$cluster_id" -c "$PROPS" >>"$STDOUT_LOG" 2>&1 \
        || { show_log_tail; die "kafka.tools.StorageTool format failed"; }
    echo "$KAFKA_CONTROLLER_PORT" >"$FORMATTED_PORT_FILE"
}

# ------------------------------------------------------------------------------------ actions

start_broker() {
    command -v java >/dev/null || die "java not found (Java 17+ runs the broker)"
    java_opts
    echo "==== $(date -u +%FT%TZ) starting broker ====" >>"$STDOUT_LOG"
    rm -f "$PIDFILE"
    # setsid: own session, so the broker outlives this shell and no terminal signal reaches it.
    # The inner bash writes its own pid and then execs java, so the pid file is the JVM's pid.
    # 9>&- : the JVM must not inherit the lock (see header).
    # shellcheck disable=SC2016  # $$ and $@ are for the inner bash
    setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
        java "${JAVA_OPTS[@]}" -cp "$LIBS/*" kafka.Kafka "$PROPS" \
        >>"$STDOUT_LOG" 2>&1 </dev/null 9>&- &
    local _
    for _ in $(seq 50); do [[ -s "$PIDFILE" ]] && break; sleep 0.1; done
    [[ -s "$PIDFILE" ]] || die "the broker did not write $PIDFILE"
}

wait_ready() {
    local pid="$1" timeout="$2" py
    py="$(python_bin)"
    "$py" "$TOPICS_PY" --bootstrap "$BOOTSTRAP" wait --timeout "$timeout" --pid "$pid"
}

ensure_topics() {
    "$(python_bin)" "$TOPICS_PY" --bootstrap "$BOOTSTRAP" ensure \
        || die "creating the Auction Flow topics failed"
}

cmd_install() {
    take_lock
    install_libs
}

# The SCRAM user of the SASL_SSL listener, created (or its password set again) through the
# Admin API; the password travels in the environment, never argv.
ensure_scram_user() {
    local password
    password="$(env_get KAFKA_SASL_PASSWORD_STACK)"
    if [[ -z "$password" ]]; then
        password="$(openssl rand -hex 16)"
        env_set KAFKA_SASL_PASSWORD_STACK "$password"
    fi
    STACK_SCRAM_PASSWORD="$password" "$(python_bin)" "$TOPICS_PY" --bootstrap "$BOOTSTRAP" scram-user "$SCRAM_USER" \
        || die "creating the SCRAM user $SCRAM_USER failed"
}

record_env() {
    env_set KAFKA_SSL_BOOTSTRAP_STACK "127.0.0.1:$KAFKA_SSL_PORT"
    env_set KAFKA_SASL_SSL_BOOTSTRAP_STACK "127.0.0.1:$KAFKA_SASL_SSL_PORT"
    env_set KAFKA_SASL_USERNAME_STACK "$SCRAM_USER"
}

cmd_up() {
    take_lock
    local pid started
    write_keystore
    if pid="$(broker_pid)"; then
        # Already ours: just confirm it answers (a concurrent `up` held the lock until ready).
        wait_ready "$pid" 15 >/dev/null \
            || { show_log_tail; die "broker pid $pid is running but not answering on $BOOTSTRAP; try '$0 down' then '$0 up'"; }
        write_props "$PROPS.wanted"
        if cmp -s "$PROPS.wanted" "$PROPS"; then
            rm -f "$PROPS.wanted"
            libs_fresh || say "warning: pom.xml changed since the broker started; '$0 down && $0 up' to use the new jars"
            say "already running (pid $pid) on $BOOTSTRAP"
            ensure_topics
            ensure_scram_user
            record_env
            return 0
        fi
        # Listeners are read at start only: a broker from before a listener was added restarts once.
        rm -f "$PROPS.wanted"
        say "server.properties is out of date (pid $pid): restarting the broker with the new one"
        stop_pid "$pid"
        rm -f "$PIDFILE"
    fi
    install_libs
    check_ports_free
    write_props
    format_once
    started=$SECONDS
    start_broker
    pid="$(cat "$PIDFILE")"
    say "started broker pid $pid; waiting up to ${READY_TIMEOUT}s for $BOOTSTRAP"
    if ! wait_ready "$pid" "$READY_TIMEOUT"; then
        show_log_tail
        # Do not leave a half-started JVM behind in CI.
        stop_pid "$pid"
        rm -f "$PIDFILE"
        die "the broker did not become ready (limit ${READY_TIMEOUT}s); stopped it. Full log: $LOG"
    fi
    say "broker ready in $((SECONDS - started)) s"
    ensure_topics
    ensure_scram_user
    record_env
}

stop_pid() {
    local pid="$1" deadline
    kill -TERM "$pid" 2>/dev/null || return 0
    deadline=$((SECONDS + STOP_TIMEOUT))
    while pid_running "$pid"; do
        if ((SECONDS >= deadline)); then
            say "broker pid $pid ignored SIGTERM for ${STOP_TIMEOUT}s: sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
}

cmd_down() {
    take_lock
    local pid
    if ! pid="$(broker_pid)"; then
        rm -f "$PIDFILE"
        say "not running"
        return 0
    fi
    say "stopping broker pid $pid"
    stop_pid "$pid"
    rm -f "$PIDFILE"
    say "stopped"
}

cmd_status() {
    local pid
    if ! pid="$(broker_pid)"; then
        say "stopped"
        return 3
    fi
    if wait_ready "$pid" 5 >/dev/null 2>&1; then
        say "running (pid $pid) on $BOOTSTRAP"
    else
        say "running (pid $pid) but not answering on $BOOTSTRAP"
        return 1
    fi
}

main() {
    case "${1:-}" in
        install) cmd_install ;;
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        *) echo "usage: $0 install|up|down|status" >&2; exit 2 ;;
    esac
}

main "$@"
