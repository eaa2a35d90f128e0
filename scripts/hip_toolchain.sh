#!/usr/bin/env bash
# A private HIP device compiler, for compiling flashopt's HIP kernels to AMDGPU code
# objects on a machine without ROCm: clang 19 (this Debian release's, which has the HIP
# front end and the AMDGPU back end), the HIP 6.4 headers (Debian unstable's
# libamdhip64-dev) and the device bitcode libraries (rocm-device-libs-17, Debian 13).
# Nothing is installed: the packages are fetched with `apt-get download` (the two newer
# suites through a private apt state whose sources come from this machine's own) and
# unpacked with `dpkg -x`. Nothing lands on PATH, so cubecl-hip-sys's build script,
# which binds against any `hipconfig` it finds there, never sees this ROCm.
#
# Usage: scripts/hip_toolchain.sh [DIR]   (default target/hip-toolchain; cached there)
# Prints DIR when it is ready: DIR/clang++ (a wrapper), DIR/hip (--hip-path),
# DIR/bitcode (--rocm-device-lib-path).
set -euo pipefail
dir=${1:-target/hip-toolchain}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [[ -x $dir/clang++ && -e $dir/ready ]]; then
  echo "$dir"
  exit 0
fi

# Pinned versions; a suite that no longer carries one gives its candidate instead.
clang_version="1:19.1.7-3~deb12u1"
hip_version="6.4.3-5"
device_libs_version="6.0+git20231212.5a852ed-2"

work=$dir/work
rm -rf "$work" "$dir/root"
mkdir -p "$work/debs" "$work/state/lists/partial" "$work/cache/archives/partial" "$dir/root"

# This machine's Debian mirror (deb822 or one-line sources), with the newer suites.
mirror=$( (grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources \
  /etc/apt/sources.list 2>/dev/null || true) | head -1 | tr -d ' ')
mirror=${mirror:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
cat > "$work/sources.list" <<EOF
deb [signed-by=$keyring] ${mirror%/} $codename main
deb [signed-by=$keyring] ${mirror%/} trixie main
deb [signed-by=$keyring] ${mirror%/} unstable main
EOF
private=(
  -o "Dir::State=$work/state" -o "Dir::State::status=/var/lib/dpkg/status"
  -o "Dir::Cache=$work/cache" -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=-" -o "APT::Sandbox::User=root"
)
apt-get "${private[@]}" update -qq

# `name=version` if the suites still have that version, else `name` (the candidate).
pick() {
  if apt-cache "${private[@]}" show "$1=$2" >/dev/null 2>&1; then
    echo "$1=$2"
  else
    echo "fallback: $1 $2 is gone, taking the candidate" >&2
    echo "$1"
  fi
}

wanted=()
# clang 19 from this machine's own release.
for p in clang-19 libclang-cpp19 libllvm19 libclang-common-19-dev lld-19 liblld-19; do
  wanted+=("$(pick "$p" "$clang_version")")
done
wanted+=("$(pick libamdhip64-dev "$hip_version")" "$(pick rocm-device-libs-17 "$device_libs_version")")
cd "$work/debs"
apt-get "${private[@]}" download -qq "${wanted[@]}" 2>/dev/null
for deb in ./*.deb; do
  dpkg -x "$deb" "$dir/root"
done
cd "$dir"

llvm=$dir/root/usr/lib/llvm-19
bitcode=$(dirname "$(find "$dir/root" -name 'ocml.bc' | head -1)")
rm -f hip bitcode
ln -s "$dir/root/usr" hip
ln -s "$bitcode" bitcode
cat > clang++ <<EOF
#!/usr/bin/env bash
export LD_LIBRARY_PATH="$dir/root/usr/lib/x86_64-linux-gnu:$llvm/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$llvm/bin/clang++" "\$@"
EOF
chmod +x clang++
./clang++ --version | head -1 >&2
ls -1 "$work/debs" > versions.txt
rm -rf "$work"
touch ready
echo "$dir"
