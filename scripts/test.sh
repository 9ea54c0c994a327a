#!/usr/bin/env bash
# Runs every check and test of edgegate on a fresh Debian machine with Rust installed.
# Installs what the tests need first: Mosquitto (the real upstream broker), its clients, and
# openssl (the TLS tests make their own certificates), systemd-analyze (the unit checks), and the
# Pi cross builds: Debian's cross compilers, qemu-user and the Rust targets.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 && python3 -c "import ensurepip" >/dev/null 2>&1 || need+=(python3 python3-venv)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null 2>&1 || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "== installing ${need[*]}"
    $sudo apt-get update -qq
    install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; }
    install || { echo "apt-get install failed; retrying once"; sleep 5; install; }
fi

pi_targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
installed="$(rustup target list --installed)"
for t in "${pi_targets[@]}"; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t" || { sleep 5; rustup target add "$t"; }
done

# Python clients for the interop tests, in one venv: mqtt-sn-12's command-line clients
# (tests/mqttsn.rs) and paho-mqtt (tests/broker/interop.rs).
pyenv=target/pyenv
if [ ! -x "$pyenv/bin/mqtt_sn_pub" ] || ! "$pyenv/bin/python" -c 'import paho.mqtt' >/dev/null 2>&1; then
    echo "== installing mqtt-sn-12 and paho-mqtt into $pyenv"
    command -v python3 >/dev/null 2>&1 || { echo "python3 is needed for the interop tests"; exit 1; }
    python3 -m venv "$pyenv"
    pipi() { "$pyenv/bin/pip" install -q mqtt-sn-12==1.0.9 'paho-mqtt>=2,<3'; }
    pipi || { echo "pip install failed; retrying once"; sleep 5; pipi; }
fi
export EDGEGATE_MQTTSN_TOOLS="$PWD/$pyenv/bin"
export EDGEGATE_PAHO_PYTHON="$PWD/$pyenv/bin/python"

echo "== house checks"
bash scripts/house.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --all-targets --locked

# The Pi builds (.cargo/config.toml names the linkers and qemu runners). The aarch64 suite runs
# under qemu-aarch64; the tests start the gateway binary through the same emulator.
echo "== cargo build --release (armv7, 32-bit Pi OS)"
cargo build --release --locked --target armv7-unknown-linux-gnueabihf
echo "== cargo test (aarch64, 64-bit Pi OS, under qemu-aarch64)"
EDGEGATE_TEST_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
    cargo test --locked --target aarch64-unknown-linux-gnu --lib --bins --tests
