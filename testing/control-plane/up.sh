#!/usr/bin/env bash
# Starts a real control plane on loopback: etcd, kube-apiserver (RBAC authorization, a generated CA,
# service-account token signing), and optionally kwok and kube-scheduler, each on a free port.
# Waits for kube-apiserver's /readyz, then writes into STATE_DIR:
#   kubeconfig         an admin kubeconfig (client certificate in group system:masters)
#   env                shell assignments: KUBECONFIG, ETCD_URL, APISERVER_URL, BIN_DIR, ...
#   pids               the processes started, stopped by down.sh
#   logs/*.log         each component's log
#
# Usage: up.sh STATE_DIR [--kwok] [--kube-scheduler] [--bench] [--apiserver-arg ARG]... [--watch-pid PID]
#   --kwok             run kwok, managing nodes annotated kwok.x-k8s.io/node=fake
#   --kube-scheduler   run kube-scheduler (leader election off, QPS/burst 5000 like scheduler_perf)
#   --bench            lift the API server's inflight limits and priority-and-fairness, as kwokctl does
#                      for benchmarks
#   --apiserver-arg A  one more kube-apiserver flag (e.g. --watch-cache=false), may repeat
#   --watch-pid PID    stop everything when process PID exits (for test harnesses)
# The binaries come from build.sh (built once and cached by version).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

state="${1:?usage: up.sh STATE_DIR [--kwok] [--kube-scheduler] [--bench] [--watch-pid PID]}"
shift
with_kwok=0 with_ks=0 bench=0 watch_pid="" extra_api=()
while [ $# -gt 0 ]; do
  case "$1" in
    --kwok) with_kwok=1 ;;
    --kube-scheduler) with_ks=1 ;;
    --bench) bench=1 ;;
    --watch-pid) watch_pid="$2"; shift ;;
    --apiserver-arg) extra_api+=("$2"); shift ;;
    *) echo "up.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if [ -s "$state/pids" ]; then
  while read -r name pid; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "up.sh: $state already runs a control plane ($name is pid $pid); down.sh $state first, or pick another folder" >&2
      exit 2
    fi
  done <"$state/pids"
fi
bin="$("$here/build.sh" | tail -n1)"
stages="$(dirname "$bin")/kwok-stages"
mkdir -p "$state/logs" "$state/pki"
state="$(cd "$state" && pwd)"
: >"$state/pids"

# A free port below the kernel's ephemeral range: a port from that range
# (what binding port 0 gives) can be taken by any outgoing connection while
# its server is down, so a restarted kube-apiserver could not bind it again.
free_port() {
  python3 -c '
import random, socket
lo = 32768
try:
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    pass
for _ in range(500):
    p = random.randint(10000, max(10001, lo - 1))
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
else:
    raise SystemExit("up.sh: no free port below the ephemeral range")
'
}

cleanup_on_error() {
  echo "up.sh: start-up failed; logs in $state/logs" >&2
  for f in "$state"/logs/*.log; do echo "--- $f (last 20 lines)" >&2; tail -n 20 "$f" >&2 || true; done
  "$here/down.sh" "$state" || true
}
trap cleanup_on_error ERR

# --- certificates: a CA, the API server's serving cert (IP SAN 127.0.0.1), an admin client cert,
# the service-account signing key.
pki="$state/pki"
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
    -subj "/CN=strata-test-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n' >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 2 -extfile apiserver.ext 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=strata-admin" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n' >client.ext
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 2 -extfile client.ext 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)

start() { # name, command...
  local name="$1"
  shift
  "$@" >"$state/logs/$name.log" 2>&1 &
  echo "$name $!" >>"$state/pids"
}

# --- etcd
etcd_port="$(free_port)"
etcd_peer="$(free_port)"
start etcd "$bin/etcd" --data-dir "$state/etcd" --name strata-test \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "strata-test=http://127.0.0.1:$etcd_peer" \
  --unsafe-no-fsync=true --quota-backend-bytes=8589934592 --log-level=warn
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$etcd_port/health" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$etcd_port/health" >/dev/null

# --- kube-apiserver
api_port="$(free_port)"
api_flags=(
  --etcd-servers "http://127.0.0.1:$etcd_port"
  --secure-port "$api_port" --bind-address 127.0.0.1 --advertise-address 127.0.0.1
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key"
  --client-ca-file "$pki/ca.crt"
  --service-account-issuer https://kubernetes.default.svc.cluster.local
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key"
  --api-audiences https://kubernetes.default.svc.cluster.local
  --service-cluster-ip-range 10.0.0.0/24
  --authorization-mode RBAC
  --allow-privileged=true
  # No kube-controller-manager runs here: nothing would make default ServiceAccounts, and nothing
  # would lift the node.kubernetes.io/not-ready taint that TaintNodesByCondition puts on new nodes.
  --disable-admission-plugins ServiceAccount,TaintNodesByCondition
  --endpoint-reconciler-type none
  --cert-dir "$pki/generated"
)
if [ "$bench" = 1 ]; then
  api_flags+=(--max-requests-inflight=0 --max-mutating-requests-inflight=0 --enable-priority-and-fairness=false)
fi
api_flags+=("${extra_api[@]}")
start kube-apiserver "$bin/kube-apiserver" "${api_flags[@]}"

cat >"$state/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: strata-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: strata-test
  context: {cluster: strata-test, user: admin}
current-context: strata-test
EOF

ready=0
for _ in $(seq 1 300); do
  if curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.2
done
if [ "$ready" != 1 ]; then
  echo "up.sh: kube-apiserver not ready after 60 s" >&2
  false
fi

# --- kwok
if [ "$with_kwok" = 1 ]; then
  kwok_cfg=()
  for f in "$stages"/*.yaml; do kwok_cfg+=(--config "$f"); done
  start kwok "$bin/kwok" --kubeconfig "$state/kubeconfig" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=0 "${kwok_cfg[@]}"
fi

# --- kube-scheduler
if [ "$with_ks" = 1 ]; then
  cat >"$state/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $state/kubeconfig
  qps: 5000
  burst: 5000
leaderElection:
  leaderElect: false
EOF
  ks_port="$(free_port)"
  start kube-scheduler "$bin/kube-scheduler" --config "$state/kube-scheduler.yaml" \
    --secure-port "$ks_port" --bind-address 127.0.0.1 \
    --authentication-skip-lookup=true --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics
fi

cat >"$state/env" <<EOF
export KUBECONFIG=$state/kubeconfig
export STRATA_E2E_KUBECONFIG=$state/kubeconfig
export ETCD_URL=http://127.0.0.1:$etcd_port
export APISERVER_URL=https://127.0.0.1:$api_port
export CONTROL_PLANE_BIN=$bin
export CONTROL_PLANE_STATE=$state
EOF

if [ -n "$watch_pid" ]; then
  (
    trap '' HUP
    while kill -0 "$watch_pid" 2>/dev/null; do sleep 1; done
    "$here/down.sh" "$state"
  ) >/dev/null 2>&1 </dev/null &
  disown
fi
trap - ERR
echo "up.sh: control plane ready: API server https://127.0.0.1:$api_port, etcd :$etcd_port; source $state/env" >&2
