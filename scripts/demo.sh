#!/usr/bin/env bash
# make demo: the main job on real data, on the embedded default stack.
# Builds the binaries, fetches flights-3m.parquet, starts `teactl dev` in a
# temporary directory and, as a user would with teactl: creates model
# `flights`, appends the 3 M flights, declares `monthly_delays` with derive
# (kept current in every later version), appends corrections and deletes
# one origin airport, shows the versions, pulls the
# latest snapshot and prints the ten worst months from the snapshot and from
# the Parquet archive. Prints how long each step took; leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin}
TEACTL=$BIN/teactl
DELETED_ORIGIN=${DELETED_ORIGIN:-ORD}

step_start=0
step() { step_start=$EPOCHREALTIME; printf '\n\033[1m== %s\033[0m\n' "$*"; }
took() { awk -v a="$step_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "   (%.2f s)\n", b - a }'; }

step "build"
make -s build
took

step "fetch the data (vega-datasets@3.2.1, data/flights-3m.parquet)"
DATA=$(scripts/fetch-flights.sh)
ls -l "$DATA"
took

DIR=$(mktemp -d -t teatree-demo-XXXXXX)
chmod 755 "$DIR" # PostgreSQL runs as the postgres user when the demo runs as root
LOG=$DIR/dev.log
cleanup() {
  if [ -n "${DEV_PID:-}" ] && kill -0 "$DEV_PID" 2>/dev/null; then
    kill -INT "$DEV_PID"
    wait "$DEV_PID" || true
  fi
  rm -rf "$DIR"
}
trap cleanup EXIT

step "start the stack: teactl dev --dir $DIR"
"$TEACTL" dev --dir "$DIR" --nats-port 0 --duckdb-memory-limit 2GB >"$LOG" 2>&1 &
DEV_PID=$!
for _ in $(seq 1 600); do
  [ -f "$DIR/env" ] && break
  kill -0 "$DEV_PID" 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 0.1
done
# shellcheck disable=SC1091
. "$DIR/env"
took

step "1. create model flights"
"$TEACTL" model create flights
took

step "2. append flights-3m.parquet (staged in the object store, applied, published)"
"$TEACTL" append flights flights "$DATA" --wait
took

# One line, no double quotes: it goes into a JSON string as it is. Only
# count, sum, min, max and avg over one table grouped by its other items:
# the db-manager maintains it incrementally (docs/decisions.md, Derived
# tables); a percentile would make every change recompute it.
MONTHLY="SELECT date_trunc('month', date)::DATE AS month, origin, count(*) AS flights, avg(delay) AS avg_delay, max(delay) AS max_delay, avg(CASE WHEN delay > 15 THEN 1.0 ELSE 0.0 END) AS late_share, avg(distance) AS avg_distance FROM flights GROUP BY ALL"
derive_args="{\"table\":\"monthly_delays\",\"query\":\"$MONTHLY\"}"
ATL_JAN="SELECT month, origin, flights, round(avg_delay, 4) AS avg_delay, max_delay FROM monthly_delays WHERE origin IN ('ATL', 'SFO', '$DELETED_ORIGIN') AND month = DATE '2001-01-01' ORDER BY origin"

step "3. derive monthly_delays (per month and origin: flights, avg and max delay, share > 15 min late, avg distance), kept current from now on"
"$TEACTL" submit flights derive --args "$derive_args" --wait
"$TEACTL" derived flights
"$TEACTL" query flights "$ATL_JAN"
took

step "4. corrections as inline rows (monthly_delays merged incrementally in the same version)"
cat >"$DIR/corrections.ndjson" <<ROWS
{"date":"2001-01-01 06:00:00","delay":12,"distance":328,"origin":"SFO","destination":"LAX"}
{"date":"2001-01-01 07:30:00","delay":-4,"distance":1846,"origin":"JFK","destination":"SFO"}
{"date":"2001-01-02 09:15:00","delay":95,"distance":733,"origin":"ATL","destination":"ORD"}
ROWS
"$TEACTL" submit flights append --args '{"table":"flights"}' --rows "$DIR/corrections.ndjson" --wait
"$TEACTL" query flights "$ATL_JAN"
took

step "   a correction: the SFO flight of 06:00 was 20 minutes late, not 12 (an update: monthly_delays recomputed in the same version)"
"$TEACTL" submit flights update --args '{"table":"flights","set":{"delay":20},"where":[{"column":"origin","op":"=","value":"SFO"},{"column":"date","op":"=","value":"2001-01-01 06:00:00"},{"column":"distance","op":"=","value":328}]}' --wait
"$TEACTL" query flights "$ATL_JAN"
took

step "   delete every flight from $DELETED_ORIGIN (monthly_delays recomputed in the same version)"
"$TEACTL" submit flights delete --args "{\"table\":\"flights\",\"where\":[{\"column\":\"origin\",\"op\":\"=\",\"value\":\"$DELETED_ORIGIN\"}]}" --wait
"$TEACTL" query flights "$ATL_JAN"
"$TEACTL" derived flights
took

step "5. versions"
"$TEACTL" versions flights
took

step "   pull the latest snapshot (verified sha256 and row counts)"
SNAP=$("$TEACTL" pull flights -o "$DIR/flights.duckdb")
echo "$SNAP  (open it with: duckdb -readonly $SNAP)"
took

# The data covers January to June 2001 (and six flights of July 1st), so
# the ten worst months are months of one origin airport, among those with
# at least 1000 flights.
TOP10="SELECT month, origin, flights, round(avg_delay, 2) AS avg_delay, max_delay, round(100 * late_share, 1) AS pct_late_15
FROM monthly_delays WHERE flights >= 1000 ORDER BY avg_delay DESC, month, origin LIMIT 10"
step "   the ten worst months (of an origin airport) by average delay, from the snapshot"
"$TEACTL" query flights "$TOP10"
took

step "   the same from the Parquet archive of monthly_delays"
"$TEACTL" query flights "$TOP10" --source parquet
took

step "6. stop the stack"
kill -INT "$DEV_PID"
wait "$DEV_PID" || true
DEV_PID=
took
echo
echo "demo done"
