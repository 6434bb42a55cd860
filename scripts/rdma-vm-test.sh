#!/usr/bin/env bash
# Runs SFS's RDMA data path on a real (software) RoCE device: Soft-RoCE
# (rdma_rxe) inside a QEMU guest, because the host kernel has no RDMA support.
#
#   1. builds the transport conformance test and the `sfs` binary (cargo);
#   2. fetches Debian packages with `apt-get download` (no installation):
#      linux-image-amd64 (kernel + rdma_rxe.ko), busybox-static, ibverbs-providers
#      (librxe), perftest (ib_write_bw/ib_read_bw) and libpci3 (perftest needs it);
#   3. packs a busybox initramfs with those binaries and every shared library
#      `ldd` names, boots it under QEMU (TCG, no NIC: nothing leaves the guest);
#   4. in the guest: loads the RDMA modules in dependency order, binds rxe0 to
#      a dummy0 interface with an address (rxe on `lo` cannot resolve routes),
#      runs the conformance suite over RDMA and TCP, then an end-to-end SFS run
#      (two servers + client over rxe0: put, get, checksum) and, with
#      SFS_VM_BENCH=1, the throughput comparison of docs/performance.md.
#
# Exits 0 only when every guest step passed. Bounded in time: the whole guest
# run is killed after SFS_VM_TIMEOUT seconds (default 900).
#
# Environment: SFS_VM_DIR (work dir, default $CARGO_TARGET_DIR/rdma-vm; the
# downloaded .debs are cached there), SFS_VM_PROFILE (debug|release, default
# debug), SFS_VM_BENCH=1 (also measure), SFS_VM_TIMEOUT.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sfs/target}"
work="${SFS_VM_DIR:-$CARGO_TARGET_DIR/rdma-vm}"
profile="${SFS_VM_PROFILE:-debug}"
timeout_s="${SFS_VM_TIMEOUT:-900}"
bench="${SFS_VM_BENCH:-0}"
started=$SECONDS

say() { echo "==> rdma-vm: $*"; }
die() {
    echo "rdma-vm-test.sh: FAILED: $*" >&2
    exit 1
}

command -v qemu-system-x86_64 >/dev/null ||
    die "qemu-system-x86_64 not found: run scripts/setup.sh (package qemu-system-x86)"

# --- 1. binaries ---------------------------------------------------------
profile_flag=()
[[ "$profile" == release ]] && profile_flag=(--release)
say "building sfs and the conformance test ($profile)"
# The same set sfs_testkit and test.sh build, so no package is built twice
# with two feature sets.
cargo build -q "${profile_flag[@]}" -p sfs_cli -p sfs_shim -p sfs_preload
conformance=$(cargo test -q "${profile_flag[@]}" -p sfs_rdma --test conformance --no-run \
    --message-format=json |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "conformance" and m.get("executable"):
        print(m["executable"])')
[[ -x "$conformance" ]] || die "conformance test binary not found"
sfs_bin="$CARGO_TARGET_DIR/$profile/sfs"
[[ -x "$sfs_bin" ]] || die "$sfs_bin not built"

# --- 2. Debian packages ----------------------------------------------------
mkdir -p "$work/debs"
kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
if [[ -z "$kernel_pkg" ]]; then
    apt-get update -q >/dev/null
    kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
fi
[[ -n "$kernel_pkg" ]] || die "cannot resolve linux-image-amd64 to a kernel package"
packages=("$kernel_pkg" busybox-static ibverbs-providers perftest libpci3)
(
    cd "$work/debs"
    for p in "${packages[@]}"; do
        compgen -G "${p}_*.deb" >/dev/null && continue
        say "apt-get download $p"
        apt-get download -q "$p" >/dev/null 2>&1 || apt-get download "$p" ||
            die "apt-get download $p failed"
    done
)
extract="$work/extract"
rm -rf "$extract" && mkdir -p "$extract"
for p in "${packages[@]}"; do
    dpkg-deb -x "$(compgen -G "$work/debs/${p}_*.deb" | head -n 1)" "$extract"
done
kver=${kernel_pkg#linux-image-}
kernel="$extract/boot/vmlinuz-$kver"
[[ -f "$kernel" ]] || die "no kernel image in $kernel_pkg"

# --- 3. initramfs ------------------------------------------------------------
root="$work/root"
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,etc/libibverbs.d,proc,sys,dev,tmp,run,modules,lib64,lib/x86_64-linux-gnu,usr/lib/x86_64-linux-gnu/libibverbs}
cp "$extract/bin/busybox" "$root/bin/busybox"
cp "$extract/usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so" "$root/usr/lib/x86_64-linux-gnu/libibverbs/"
cp "$extract/etc/libibverbs.d/rxe.driver" "$root/etc/libibverbs.d/"
modules=(crc32_generic dummy configfs udp_tunnel ip6_udp_tunnel ib_core ib_uverbs iw_cm ib_cm rdma_cm rdma_ucm rdma_rxe)
for m in "${modules[@]}"; do
    ko=$(find "$extract/lib/modules/$kver" -name "$m.ko*" | head -n 1)
    [[ -n "$ko" ]] || die "module $m not in $kernel_pkg"
    case "$ko" in
    *.xz) xz -dc "$ko" >"$root/modules/$m.ko" ;;
    *.zst) zstd -qdc "$ko" >"$root/modules/$m.ko" ;;
    *) cp "$ko" "$root/modules/$m.ko" ;;
    esac
done
echo "${modules[*]}" >"$root/modules/order"

bench_bin=""
if [[ "$bench" == 1 ]]; then
    say "building the data_bench example ($profile)"
    cargo build -q "${profile_flag[@]}" -p sfs_rdma --example data_bench
    bench_bin="$CARGO_TARGET_DIR/$profile/examples/data_bench:/bin/data_bench"
fi
binaries=(
    ${bench_bin:+"$bench_bin"}
    "$conformance:/bin/conformance"
    "$sfs_bin:/bin/sfs"
    "$(command -v rdma):/bin/rdma"
    "$extract/usr/bin/ib_write_bw:/bin/ib_write_bw"
    "$extract/usr/bin/ib_read_bw:/bin/ib_read_bw"
    "$root/usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so:"
)
lib_path="$extract/usr/lib/x86_64-linux-gnu:$extract/lib/x86_64-linux-gnu"
for entry in "${binaries[@]}"; do
    src=${entry%%:*} dst=${entry#*:}
    [[ -n "$dst" ]] && cp "$src" "$root$dst"
    missing=$(LD_LIBRARY_PATH="$lib_path" ldd "$src" | awk '/not found/ {print $1}')
    [[ -z "$missing" ]] || die "$src: libraries not found: $missing"
    LD_LIBRARY_PATH="$lib_path" ldd "$src" | awk '/=> \// {print $3} /^\t\/lib64/ {print $1}' |
        while read -r lib; do
            if [[ "$lib" == /lib64/* ]]; then
                cp -L "$lib" "$root/lib64/"
            else
                cp -L "$lib" "$root/lib/x86_64-linux-gnu/"
            fi
        done
done
cat >"$root/init.sh" <<'GUEST'
# Runs inside the guest (busybox sh). Every step prints "## <step>: ok|FAILED";
# the last line is "SFS-VM-RESULT: ok" or the first failed step.
export PATH=/bin:/sbin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
failed=""
finish() {
    echo "SFS-VM-RESULT: ${failed:-ok}"
    sync
    poweroff -f
}
check() { # check NAME COMMAND...: runs a step, records the first failure
    name=$1
    shift
    t0=$(date +%s)
    if "$@"; then
        echo "## $name: ok ($(($(date +%s) - t0)) s)"
    else
        echo "## $name: FAILED (exit $?)"
        [ -n "$failed" ] || failed=$name
    fi
}
for m in $(cat /modules/order); do
    insmod /modules/$m.ko || { echo "## insmod $m: FAILED"; failed="insmod $m"; finish; }
done
mount -t configfs none /sys/kernel/config 2>/dev/null
ip link set lo up
{ ip link show dummy0 >/dev/null 2>&1 || ip link add dummy0 type dummy; } && ip link set dummy0 mtu 4500 up && ip addr add 10.77.0.1/24 dev dummy0 ||
    { failed="dummy0"; finish; }
check "rxe0 on dummy0" rdma link add rxe0 type rxe netdev dummy0
rdma link show
[ -n "$failed" ] && finish
export SFS_RDMA_TEST_ADDR=10.77.0.1 RUST_BACKTRACE=1
check "conformance (rdma + tcp + shm)" timeout 400 /bin/conformance --test-threads=1

e2e() {
    mkdir -p /tmp/e2e && cd /tmp/e2e || return 1
    printf 's0 10.77.0.1:7700\ns1 10.77.0.1:7710\n' >hostfile
    # Client and servers share this guest: without shared_memory_data off
    # the client would use the node-local shared-memory path, not RDMA.
    echo '{"rootdir": "/tmp/e2e/root", "mountdir": "/tmp/e2e/mnt", "hosts_file": "hostfile", "transport": "rdma", "shared_memory_data": false, "log_level": "info,sfs_rdma=debug"}' >config.json
    export SFS_HOSTFILE=/tmp/e2e/hostfile SFS_CONFIG=/tmp/e2e/config.json
    timeout 120 sfs start || { cat root/*/server.log; return 1; }
    dd if=/dev/urandom of=input bs=1M count=24 2>/dev/null
    rc=0
    timeout 120 sfs put input /e2e.bin || rc=1
    timeout 120 sfs get /e2e.bin output || rc=1
    a=$(md5sum <input) b=$(md5sum <output 2>/dev/null)
    echo "checksum in:  $a"
    echo "checksum out: $b"
    [ "$a" = "$b" ] || rc=1
    timeout 30 sfs status || rc=1
    grep -h "data transport" root/*/server.log
    for s in s0 s1; do
        grep -q "data transport rdma" root/$s/server.log || { echo "server $s did not choose rdma"; rc=1; }
        grep -q "RDMA connection accepted" root/$s/server.log || { echo "no RDMA client reached $s"; rc=1; }
    done
    timeout 60 sfs stop || rc=1
    cd /
    return $rc
}
check "end-to-end sfs over rxe0" e2e
if [ "$(cat /bench)" = 1 ] && [ -z "$failed" ]; then
    check "benchmarks" sh /bench.sh
fi
finish
GUEST
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
exec /bin/sh /init.sh
EOF
cat >"$root/bench.sh" <<'BENCH'
# Throughput on rxe0: perftest, then SFS's transports, then SFS end to end.
# (A one-second pause lets each perftest server start listening: this is a
# measurement, not a test.)
ip=10.77.0.1
# Milliseconds since boot. Not `date +%s%N`: busybox's date has no %N and
# prints it literally, which shell arithmetic reads as "modulo N" (N unset,
# so 0): "divide by zero", the failure once blamed on the 64 KiB eager run.
now_ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
for tool in ib_write_bw ib_read_bw; do
    timeout 120 $tool -d rxe0 -R -s 524288 -n 400 -F >/tmp/$tool.server 2>&1 &
    sleep 1
    echo "BENCH perftest: $tool -d rxe0 -R -s 524288 -n 400 -F $ip"
    timeout 120 $tool -d rxe0 -R -s 524288 -n 400 -F $ip | grep -A1 '#bytes' | sed 's/^/BENCH   /'
    wait
done
timeout 300 data_bench rdma $ip:23500 256 512 || exit 1
timeout 300 data_bench tcp $ip:23501 256 512 || exit 1
timeout 300 data_bench rdma $ip:23502 64 64 0 || exit 1
timeout 300 data_bench rdma $ip:23503 64 64 65536 || exit 1
timeout 600 data_bench rdma $ip:23504 latency 5 || exit 1
mkdir -p /tmp/b && cd /tmp/b || exit 1
dd if=/dev/urandom of=input bs=1M count=128 2>/dev/null
printf 's0 10.77.0.1:7800\ns1 10.77.0.1:7810\n' >hostfile
export SFS_HOSTFILE=/tmp/b/hostfile SFS_CONFIG=/tmp/b/config.json
for transport in rdma tcp; do
    rm -rf root
    echo "{\"rootdir\": \"/tmp/b/root\", \"mountdir\": \"/tmp/b/mnt\", \"hosts_file\": \"hostfile\", \"transport\": \"$transport\", \"shared_memory_data\": false}" >config.json
    timeout 120 sfs start >/dev/null || exit 1
    t0=$(now_ms)
    timeout 300 sfs put input /big || exit 1
    t1=$(now_ms)
    timeout 300 sfs get /big output || exit 1
    t2=$(now_ms)
    cmp input output || exit 1
    echo "BENCH sfs $transport: put 128 MiB in $((t1 - t0)) ms = $((134217728 / ((t1 - t0) * 1000))) MB/s; get in $((t2 - t1)) ms = $((134217728 / ((t2 - t1) * 1000))) MB/s"
    timeout 60 sfs stop >/dev/null
    rm -f output
done
BENCH
chmod +x "$root/init" "$root/init.sh"
echo "$bench" >"$root/bench"
initrd="$work/initrd.cpio.gz"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 >"$initrd")
say "initramfs $(du -h "$initrd" | cut -f1), prepared in $((SECONDS - started)) s"

# --- 4. boot -------------------------------------------------------------------
log="$work/console.log"
say "booting $kernel_pkg under QEMU (TCG), log in $log"
boot_started=$SECONDS
set +e
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
    -machine q35,accel=tcg -cpu max -smp 2 -m 3072 \
    -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 quiet panic=-1 oops=panic" \
    -nographic -no-reboot -nic none -serial "file:$log" -monitor none </dev/null
qemu_rc=$?
set -e
tr -d '\r' <"$log" | grep -E '^(##|test |running |test result|[0-9]+ passed|BENCH|SFS-VM)' || true
if ((qemu_rc == 124 || qemu_rc == 137)); then
    tail -n 40 "$log" >&2
    die "the guest did not finish within $timeout_s s"
fi
result=$(tr -d '\r' <"$log" | sed -n 's/^SFS-VM-RESULT: //p' | tail -n 1)
if [[ "$result" != "ok" ]]; then
    tail -n 60 "$log" >&2
    die "guest result: ${result:-none} (see $log)"
fi
say "passed: guest ran in $((SECONDS - boot_started)) s, total $((SECONDS - started)) s"
