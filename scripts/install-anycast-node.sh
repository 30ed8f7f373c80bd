#!/bin/sh
# Installs xlb on an anycast node: the binary, its systemd unit, its config,
# and a BIRD 2 configuration that announces the VIPs xlb says it can serve
# to one upstream router over eBGP.
#
#   install-anycast-node.sh --router-id 10.0.0.2 --local-as 65001 \
#       --peer 10.0.0.1 --peer-as 65000 [--bin ./target/release/xlb] \
#       [--config xlb.yaml] [--root DIR] [--no-start]
#
# --root DIR installs under DIR instead of / (the tests use this to render
#   the same files into a scratch folder) and implies --no-start.
# --no-start writes the files but neither installs packages nor starts
#   services.
# The xlb config must name the routes file BIRD includes:
#   anycast:
#     routes_file: /etc/bird/xlb-routes.conf
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=""
start=1
bin=""
config=""
router_id=""
local_as=""
peer=""
peer_as=""

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --root) root=$2; start=0; shift 2 ;;
        --no-start) start=0; shift ;;
        --bin) bin=$2; shift 2 ;;
        --config) config=$2; shift 2 ;;
        --router-id) router_id=$2; shift 2 ;;
        --local-as) local_as=$2; shift 2 ;;
        --peer) peer=$2; shift 2 ;;
        --peer-as) peer_as=$2; shift 2 ;;
        -h|--help) usage ;;
        *) echo "install-anycast-node.sh: unknown argument $1" >&2; usage ;;
    esac
done
for v in router_id local_as peer peer_as; do
    eval "val=\$$v"
    if [ -z "$val" ]; then
        echo "install-anycast-node.sh: --$(echo $v | tr _ -) is required" >&2
        exit 2
    fi
done

if [ "$start" = 1 ] && ! command -v bird >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y bird2
fi

routes="$root/etc/bird/xlb-routes.conf"
install -d "$root/etc/bird" "$root/etc/xlb" "$root/etc/systemd/system" "$root/usr/local/bin"
if [ -n "$bin" ]; then
    install -m 0755 "$bin" "$root/usr/local/bin/xlb"
fi
install -m 0644 "$here/xlb.service" "$root/etc/systemd/system/xlb.service"
if [ -n "$config" ]; then
    install -m 0644 "$config" "$root/etc/xlb/xlb.yaml"
fi
sed -e "s|@ROUTER_ID@|$router_id|g" \
    -e "s|@LOCAL_AS@|$local_as|g" \
    -e "s|@PEER_ADDR@|$peer|g" \
    -e "s|@PEER_AS@|$peer_as|g" \
    -e "s|@ROUTES_FILE@|$routes|g" \
    "$here/bird/lb-node.conf.in" > "$root/etc/bird/bird.conf"
# Until xlb runs, the node announces nothing (the same text xlb writes
# for an empty set).
if [ ! -e "$routes" ]; then
    cat > "$routes" <<'ROUTES'
# Written by xlb: the VIP prefixes this node announces. Do not edit;
# the node's BIRD configuration includes this file.
protocol static xlb_vips4 {
  ipv4;
}
protocol static xlb_vips6 {
  ipv6;
}
ROUTES
fi

if [ "$start" = 1 ]; then
    systemctl daemon-reload
    systemctl enable --now bird
    systemctl reload bird || true
    systemctl enable --now xlb
fi
echo "installed under ${root:-/}: BIRD config $root/etc/bird/bird.conf, routes $routes"
